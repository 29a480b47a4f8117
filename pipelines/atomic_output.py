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
    staging.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the result should be readable as usual
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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def partial_path(path: str | os.PathLike) -> Path:
    """Where ``atomic_path`` builds ``path``: a hidden sibling with the same suffix, so that writers that
    choose a format by the file name still do, and a rerun after a crash overwrites the leftover."""
    path = Path(path)
    return path.with_name(f".{path.name}.partial{path.suffix}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path for the caller to write ``path``'s content to; if the block succeeds, that file
    is flushed to disk, given the permissions a new file has under the umask, and renamed to ``path``. If it
    fails, the temporary file is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(path)
    try:
        yield tmp
        descriptor = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="\n")


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def copy_atomic(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Copy in chunks, never holding the whole file in memory."""
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
