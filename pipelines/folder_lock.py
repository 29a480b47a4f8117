"""One writer per output folder: a second `qslr data prepare` into the same folder, or a second training run
(or a resume) in the same work_dir, stops with one line naming the folder and the process that holds it.

The lock is an advisory ``flock`` on a hidden sibling file (``.NAME.lock`` beside the folder), not a file inside
it: preparation may replace the whole folder, and a lock file inside would make an empty folder look used. The
kernel drops a ``flock`` when its process dies, however it dies, so a lock left by a killed run never blocks the
next one; the file stays behind and only says who held it last.

A launcher that holds the lock for its workers (``qslr train --nproc N`` starting torchrun) names it in
``QSLR_HELD_LOCKS``; a worker whose lock is named there, and still held by that launcher, does not take it again.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from qslr.pipelines.process_lifetime import alive

HELD_LOCKS = "QSLR_HELD_LOCKS"


class FolderInUseError(RuntimeError):
    """Another live process writes into the folder."""


def lock_path(folder: str | os.PathLike) -> Path:
    folder = Path(folder).absolute()
    return folder.parent / f".{folder.name}.lock"


def _holder(path: Path) -> tuple[int | None, str]:
    try:
        first, _, command = path.read_text().partition("\n")
        return int(first), command.strip()
    except (OSError, ValueError):
        return None, ""


def _held_by_launcher(path: Path) -> bool:
    """The lock is held for this process by the launcher named in ``QSLR_HELD_LOCKS``."""
    for entry in filter(None, os.environ.get(HELD_LOCKS, "").split(os.pathsep)):
        named, _, pid = entry.rpartition("@")
        if named == str(path) and pid.isdigit() and _holder(path)[0] == int(pid) and alive(int(pid)):
            return True
    return False


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, purpose: str) -> Iterator[Path]:
    """Hold ``folder``'s lock for the block; raise FolderInUseError naming the holder if another process has it.
    ``purpose`` says what the folder is (``"prepared dataset"``, ``"work_dir"``) in that message."""
    path = lock_path(folder)
    if _held_by_launcher(path):
        yield path
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")  # noqa: SIM115 - held open for the whole block; "a+" never truncates a holder's record
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid, command = _holder(path)
            who = f"process {pid}" if pid is not None else "another process"
            raise FolderInUseError(f"{Path(folder)}: {purpose} in use by {who}"
                                   + (f" ({command})" if command else "")
                                   + f"; wait for it to finish or stop it (lock {path})") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n{' '.join(sys.argv)[:300]}\n")
        handle.flush()
        yield path
    finally:
        handle.close()  # closing the last descriptor releases the flock


def launcher_environment(path: Path) -> dict[str, str]:
    """The environment for workers of a launcher that holds the lock at ``path``."""
    held = [e for e in os.environ.get(HELD_LOCKS, "").split(os.pathsep) if e]
    return {**os.environ, HELD_LOCKS: os.pathsep.join([*held, f"{path}@{os.getpid()}"])}
