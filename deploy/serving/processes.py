"""The server's processes as Linux's /proc shows them (empty elsewhere): its children, its python-backend stubs,
and processes left running from a folder."""

from __future__ import annotations

from pathlib import Path


def _processes() -> dict[int, tuple[int, list[str]]]:
    """pid -> (parent pid, command line) of every process."""
    found = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            found[int(entry.name)] = (parent, (entry / "cmdline").read_bytes().decode(errors="replace").split("\0"))
        except (OSError, ValueError, IndexError):
            continue  # a process that ended while being looked at
    return found


def child_processes(parent_pid: int) -> dict[int, list[str]]:
    """pid -> command line of each process whose parent is ``parent_pid``."""
    return {pid: args for pid, (parent, args) in _processes().items() if parent == parent_pid}


def processes_running(folder: Path) -> list[int]:
    """Processes whose program lies in ``folder``."""
    return [pid for pid, (_, args) in _processes().items() if args[0].startswith(f"{folder}/")]


def python_stubs(server_pid: int) -> dict[int, str]:
    """pid -> model name of each python-backend stub process the server started.

    The server does not restart a stub that died: its model answers every request with an error while the
    server still reports itself ready, so whoever runs the server has to watch the stubs.
    """
    return {pid: Path(args[1]).parent.parent.name  # <repository>/<model>/1/model.py
            for pid, args in child_processes(server_pid).items()
            if len(args) > 1 and args[0].endswith("triton_python_backend_stub")}


# A python-backend stub's third argument: the shared-memory region (in /dev/shm) it and the server share.
SHM_REGION_PREFIX = "triton_python_backend_shm_region_"


def shm_regions(pids: list[int] | dict[int, object]) -> set[str]:
    """The shared-memory regions named by these stub processes' command lines (each stub has its own)."""
    table = _processes()
    return {table[pid][1][2] for pid in pids
            if pid in table and len(table[pid][1]) > 2 and table[pid][1][2].startswith(SHM_REGION_PREFIX)}


def processes_visible() -> bool:
    """Whether processes can be looked at here at all (without /proc every look above is empty)."""
    return Path("/proc").is_dir()
