"""The server a serving benchmark loads: one already running (``--url``), or a tritonserver it starts on a
repository it builds and stops afterwards."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import click

URL_OPTION = click.option(
    "--url", default=None,
    help="Load the server already running at this HTTP address (host:port) instead of building a repository and "
         "starting one; it must serve this checkpoint's data's glosses.")


@contextlib.contextmanager
def served(url: str | None, repository: Callable[[], Path]) -> Iterator[str]:
    """The HTTP address to load: ``url``, which must answer ready, else that of a tritonserver started on the
    repository ``repository()`` builds (SIGTERM and SIGHUP stop it as Ctrl-C does)."""
    from qslr.deploy.serving.server import Ports, TritonServer, free_port, is_ready
    from qslr.deploy.serving.supervision import exit_on_signals

    if url is not None:
        if not is_ready(url):
            raise click.ClickException(f"{url}: no ready tritonserver answers there (its /v2/health/ready)")
        yield url
        return
    with exit_on_signals(), TritonServer(repository(), Ports(free_port(), free_port(), free_port())) as server:
        yield server.http_url


def still_ready(url: str, after: str) -> None:
    """Refuse a run after which the server stopped answering ready: what it measured was not a serving server."""
    from qslr.deploy.serving.server import is_ready

    if not is_ready(url):
        raise click.ClickException(f"the server at {url} was not ready after {after}")
