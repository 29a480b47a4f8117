"""The signal mechanism commands keep their servers with, in-process (a real server adds nothing to it; the real
cases are in test_server_signals): SIGTERM and SIGHUP end the block as Ctrl-C does, a second signal while it
unwinds is ignored, and the handlers before it come back."""

from __future__ import annotations

import os
import signal
import time

import pytest

from qslr.deploy.serving.supervision import exit_on_signals


def _signal_self(sig: signal.Signals) -> None:
    os.kill(os.getpid(), sig)
    time.sleep(0.5)  # Python runs the handler between bytecodes of this thread: well within this sleep


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_ends_the_block_as_ctrl_c_and_a_second_does_not_cut_its_unwinding_short(sig):
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    unwound = []
    with pytest.raises(KeyboardInterrupt, match=f"stopped by {sig.name}"), exit_on_signals():
        try:
            _signal_self(sig)
            pytest.fail("the signal did not interrupt the block")
        finally:
            # What a server's stop does while unwinding; a service manager's repeated SIGTERM meanwhile.
            _signal_self(signal.SIGTERM)
            unwound.append(True)
    assert unwound == [True]
    assert {s: signal.getsignal(s) for s in before} == before


def test_outside_the_block_the_previous_handlers_answer():
    received = []
    previous = signal.signal(signal.SIGHUP, lambda signum, frame: received.append(signum))
    try:
        with exit_on_signals():
            pass
        _signal_self(signal.SIGHUP)
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert received == [signal.SIGHUP]
