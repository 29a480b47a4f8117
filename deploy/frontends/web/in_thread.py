"""The page's app served in a thread of this process, on a free local port: for the tests and for the tool that
draws the README's picture, with the same HTTP stack `qslr web` serves the page with."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import uvicorn

from qslr.deploy.serving.server import free_port


@contextlib.contextmanager
def serving_in_thread(app, startup_timeout: float = 30.0) -> Iterator[str]:
    """Yields the page's URL (http://127.0.0.1:PORT/); stops the server on leaving."""
    web = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=web.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not web.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the page's server did not start within {startup_timeout:g} s")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{web.config.port}/"
    finally:
        web.should_exit = True
        thread.join(timeout=30)
