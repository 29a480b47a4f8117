"""How a command keeps the tritonserver it started: the signals that stop it as Ctrl-C does."""

from __future__ import annotations

import contextlib
import signal


@contextlib.contextmanager
def exit_on_signals(signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGHUP)):
    """Within the block, SIGTERM and SIGHUP end the command as Ctrl-C does (KeyboardInterrupt), so that every
    `with` in it unwinds: a server it started (in a session of its own, out of reach of signals sent to the
    command) is stopped, stubs included, rather than left running without its command."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")

    previous = {sig: signal.signal(sig, interrupt) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
