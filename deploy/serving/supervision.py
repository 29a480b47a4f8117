"""How a command keeps the tritonserver it started: the signals that stop it as Ctrl-C does, and the watch on the
server's process and its python stubs while it serves."""

from __future__ import annotations

import contextlib
import signal
import time

from qslr.deploy.serving.server import ServerError, TritonServer


@contextlib.contextmanager
def exit_on_signals(signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGHUP)):
    """Within the block, SIGTERM and SIGHUP end the command as Ctrl-C does (KeyboardInterrupt), so that every
    `with` in it unwinds: a server it started (in a session of its own, out of reach of signals sent to the
    command) is stopped, stubs included, rather than left running without its command. Only the first signal
    interrupts: a second one (a service manager's repeated SIGTERM) must not cut that stopping short."""
    def interrupt(signum, frame):
        for sig in signals:
            signal.signal(sig, signal.SIG_IGN)
        raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")

    previous = {sig: signal.signal(sig, interrupt) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def watch(server: TritonServer, poll_seconds: float = 0.5) -> None:
    """Return when the started ``server`` exits by itself with status 0; raise ServerError naming why when it exits
    otherwise or one of its python models dies. Ctrl-C (and a signal `exit_on_signals` turns into one) ends the
    watch as KeyboardInterrupt; the caller's `with` then stops the server.

    A dead python model is fatal: the server would go on answering every request to it with an error while
    calling itself ready.
    """
    while server.process.poll() is None:
        time.sleep(poll_seconds)
        dead = server.dead_models()
        if dead:
            raise ServerError(f"python model {', '.join(dead)} died (its stub process exited); stopped tritonserver "
                              f"rather than serve errors")
    if server.process.returncode != 0:
        raise ServerError(f"tritonserver exited with code {server.process.returncode}")
