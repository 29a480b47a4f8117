"""`qslr web`: the page to try the recogniser, on a local port, in front of a running server or one it starts."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("web")
@click.option("--url", default="127.0.0.1:8000", show_default=True,
              help="The recognition server's HTTP (or, with --grpc, gRPC) address.")
@click.option("--grpc", is_flag=True)
@click.option("--serve", "repository", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Start a server on REPOSITORY (free local ports) instead, and stop it with the page.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Where the page listens.")
@click.option("--port", type=int, default=8080, show_default=True)
@click.option("--max-upload-mb", type=click.FloatRange(min=0, min_open=True), default=50, show_default=True,
              help="Larger uploads are refused.")
def web(url: str, grpc: bool, repository: Path | None, host: str, port: int, max_upload_mb: float) -> None:
    """Serve a page on HOST:PORT to recognise an uploaded or recorded video and show its glosses on a timeline."""
    from qslr.deploy.serving.server import Ports, ServerError, TritonServer, free_port, port_in_use
    from qslr.deploy.serving.supervision import exit_on_signals

    if port_in_use(host, port):
        raise click.ClickException(f"port {port} on {host} is already in use (choose another with --port)")
    if repository is None:
        _serve_page(url, grpc, host, port, max_upload_mb)
        return
    try:
        with exit_on_signals(), TritonServer(repository.resolve(), Ports(free_port(), free_port(),
                                                                         free_port())) as server:
            click.echo(f"tritonserver ready on {server.http_url}", err=True)
            _serve_page(server.grpc_url if grpc else server.http_url, grpc, host, port, max_upload_mb)
    except ServerError as exc:
        raise click.ClickException(str(exc)) from None


def _serve_page(url: str, grpc: bool, host: str, port: int, max_upload_mb: float) -> None:
    import uvicorn

    from qslr.deploy.frontends.web.app import UploadLimits, create_app
    from qslr.deploy.serving.client import CslrClient

    app = create_app(lambda: CslrClient(url, grpc), UploadLimits(int(max_upload_mb * 2**20)))
    click.echo(f"the page is on http://{host}:{port}/ (Ctrl-C stops)", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
