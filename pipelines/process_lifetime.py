"""A process that must not outlive another: it is killed as soon as the other ends, however that one ends.

A SIGKILLed training rank runs no clean-up, so what it started would run on without it: its DataLoader workers
(forked from a fork server, whose own lifetime the workers keep up, and whose PyTorch watchdog looks at the fork
server rather than the rank) and, for a lost launcher, the ranks themselves. Each of them watches the process it
belongs to instead. A signal to the other process's process group would not do: torchrun signals a worker's group
only while that worker is alive.
"""

from __future__ import annotations

import os
import select
import signal
import threading
import time

POLL_SECONDS = 1.0  # where the kernel has no pidfd (Linux before 5.3): how often the owner is looked at


def end_with(owner: int) -> None:
    """Kill this process (SIGKILL) as soon as process ``owner`` has ended; at once if it already has."""
    try:
        handle: int | None = os.pidfd_open(owner)
    except ProcessLookupError:
        _die()
    except (AttributeError, OSError):
        handle = None
    threading.Thread(target=_watch, args=(owner, handle), name=f"end-with-{owner}", daemon=True).start()


def _watch(owner: int, handle: int | None) -> None:
    if handle is not None:
        waiting = select.poll()
        waiting.register(handle, select.POLLIN)  # a pidfd becomes readable when its process ends
        waiting.poll()
    else:
        # By its pid alone: a pid reused within POLL_SECONDS of the owner's end would go unnoticed.
        while alive(owner):
            time.sleep(POLL_SECONDS)
    _die()


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists (a zombie, ended but not yet reaped, counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by another user
    return True


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
