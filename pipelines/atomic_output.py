"""Outputs that appear whole or not at all: build under a temporary name, then rename."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


class OutputExistsError(FileExistsError):
    """The destination already holds data and the caller did not ask to replace it."""


def _is_nonempty_dir(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


@contextlib.contextmanager
def atomic_directory(destination: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh sibling directory that becomes ``destination`` only if the block succeeds.

    The staging folder is a hidden sibling (same filesystem, so the final rename is atomic); if the
    block raises or the process dies, ``destination`` is untouched and never looks complete.
    """
    destination = Path(destination)
    if destination.exists() and not destination.is_dir():
        raise OutputExistsError(f"{destination}: exists and is not a directory")
    if _is_nonempty_dir(destination) and not overwrite:
        raise OutputExistsError(f"{destination}: directory is not empty (pass --overwrite to replace it)")
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.partial-", dir=destination.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if destination.exists():
        # Move the old tree aside first so that a crash between the two renames leaves either the old
        # or the new dataset in place, never a mixture.
        retired = Path(tempfile.mkdtemp(prefix=f".{destination.name}.old-", dir=destination.parent))
        os.replace(destination, retired / "tree")
        os.replace(staging, destination)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(staging, destination)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
