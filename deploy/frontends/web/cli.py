"""`qslr web`: the page to try the recogniser, on a local port, in front of a running server or one it starts, or
with a model of its own (no server). Its live mode recognises webcam streams as they come: with a server, each
window goes to its `visual` model (so live windows share its dynamic batching with uploads) and is decoded here."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("web")
@click.option("--url", default="127.0.0.1:8000", show_default=True,
              help="The recognition server's HTTP (or, with --grpc, gRPC) address.")
@click.option("--grpc", is_flag=True)
@click.option("--serve", "repository", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Start a server on REPOSITORY (free local ports) instead, and stop it with the page.")
@click.option("--repository", "live_repository", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="With --url: the running server's repository folder, for the live mode's "
                                 "vocabulary (without it the page has no live mode).")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="No server: recognise uploads and live streams with this checkpoint, in PyTorch.")
@click.option("--onnx", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="No server: recognise with this graph from `qslr export onnx`, in onnxruntime.")
@click.option("--window", type=int, default=None, help="Live windows, in frames [default: the live defaults].")
@click.option("--context", type=int, default=None, help="Live windows' context in frames [default: the live ones].")
@click.option("--host", default="127.0.0.1", show_default=True, help="Where the page listens.")
@click.option("--port", type=int, default=8080, show_default=True)
@click.option("--max-upload-mb", type=click.FloatRange(min=0, min_open=True), default=50, show_default=True,
              help="Larger uploads are refused.")
def web(url: str, grpc: bool, repository: Path | None, live_repository: Path | None, checkpoint: Path | None,
        onnx: Path | None, window: int | None, context: int | None, host: str, port: int,
        max_upload_mb: float) -> None:
    """Serve a page on HOST:PORT to recognise an uploaded, recorded or live webcam video and show its glosses on a
    timeline."""
    from qslr.deploy.serving.server import Ports, ServerError, TritonServer, free_port, port_in_use
    from qslr.deploy.serving.supervision import exit_on_signals

    if sum(x is not None for x in (repository, checkpoint, onnx)) > 1:
        raise click.UsageError("give one of --serve, --checkpoint and --onnx")
    if port_in_use(host, port):
        raise click.ClickException(f"port {port} on {host} is already in use (choose another with --port)")
    page = _Page(host, port, max_upload_mb, window, context)
    if checkpoint is not None or onnx is not None:
        page.serve_local(checkpoint, onnx)
        return
    if repository is None:
        page.serve(url, grpc, live_repository)
        return
    try:
        with exit_on_signals(), TritonServer(repository.resolve(), Ports(free_port(), free_port(),
                                                                         free_port())) as server:
            click.echo(f"tritonserver ready on {server.http_url}", err=True)
            page.serve(server.grpc_url if grpc else server.http_url, grpc, repository)
    except ServerError as exc:
        raise click.ClickException(str(exc)) from None


class _Page:
    def __init__(self, host: str, port: int, max_upload_mb: float, window: int | None, context: int | None):
        self.host, self.port, self.window, self.context = host, port, window, context
        self.max_bytes = int(max_upload_mb * 2**20)

    def serve(self, url: str, grpc: bool, repository: Path | None) -> None:
        """In front of a server; live windows through its `visual` model where its repository is known."""
        from qslr.deploy.frontends.live import LiveModel
        from qslr.deploy.serving.client import CslrClient, RecognitionError

        live = None
        if repository is not None:
            try:
                live = LiveModel.served(url, grpc, repository, self.window, self.context)
            except (RecognitionError, ValueError, KeyError) as exc:
                raise click.ClickException(f"the live mode cannot be set up: {exc}") from None
        self._run(lambda: CslrClient(url, grpc), live)

    def serve_local(self, checkpoint: Path | None, onnx: Path | None) -> None:
        """With a model of its own, for uploads and live streams alike."""
        from qslr.deploy.frontends.live import LiveModel
        from qslr.deploy.frontends.recognise import (
            LocalRecogniser,
            ModelLoadError,
            load_checkpoint_model,
            load_onnx_model,
        )
        from qslr.deploy.frontends.web.local_uploads import LocalUploads
        from qslr.deploy.serving.buffered import WindowPlan

        try:
            model = load_checkpoint_model(checkpoint) if checkpoint else load_onnx_model(onnx)
            live = LiveModel.local(model, WindowPlan.for_live({}, model.windows.stride, self.window, self.context))
        except ModelLoadError as exc:
            raise click.ClickException(str(exc)) from None
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        self._run(lambda: LocalUploads(LocalRecogniser(model)), live)

    def _run(self, recogniser, live) -> None:
        import uvicorn

        from qslr.deploy.frontends.web.app import UploadLimits, create_app

        app = create_app(recogniser, UploadLimits(self.max_bytes), live)
        mode = "" if live is not None else " (no live mode: give --repository)"
        click.echo(f"the page is on http://{self.host}:{self.port}/ (Ctrl-C stops){mode}", err=True)
        uvicorn.run(app, host=self.host, port=self.port, log_level="warning")
