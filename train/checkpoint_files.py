"""A run's resumable checkpoint files, and which of them a resume loads.

``checkpoints/last.pt`` is always the newest resumable state: every resumable save writes it, whole or not at all
(at an epoch's end, on a stop request, and every ``train.checkpoint_every_steps`` steps). A periodic save also
keeps its state as ``step{N}.pt``, a hard link to the same file (no second write), and the newest
KEPT_STEP_CHECKPOINTS of those are kept: a resume that cannot read ``last.pt`` falls back to them, newest first.

Light on purpose (no torch): the command line imports CheckpointWriteError from here.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qslr.pipelines.atomic_output import atomic_path

log = logging.getLogger(__name__)

LAST = "last.pt"
# Two, so that a step checkpoint that was written whole but cannot be read back (a storage fault) still leaves one.
KEPT_STEP_CHECKPOINTS = 2
_STEP_NAME = re.compile(r"step(\d+)\.pt")


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (a full disk, say): the run stops and the previous checkpoint stays."""


def checkpoint_folder(work_dir: str | os.PathLike) -> Path:
    return Path(work_dir) / "checkpoints"


def step_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """(step, path) of each step checkpoint in ``folder``, newest first."""
    found = [(int(match.group(1)), path) for path in folder.glob("step*.pt")
             if (match := _STEP_NAME.fullmatch(path.name))]
    return sorted(found, reverse=True)


def keep_as_step_checkpoint(folder: Path, step: int) -> Path:
    """Keep the ``last.pt`` just written as ``step{step}.pt``, and only the newest KEPT_STEP_CHECKPOINTS of them."""
    target = folder / f"step{step}.pt"
    with atomic_path(target) as staged:
        staged.unlink(missing_ok=True)  # a leftover linked to an older checkpoint must not be written through
        try:
            os.link(folder / LAST, staged)
        except OSError:  # a filesystem without hard links
            shutil.copyfile(folder / LAST, staged)
    for _, older in step_checkpoints(folder)[KEPT_STEP_CHECKPOINTS:]:
        older.unlink(missing_ok=True)
    return target


def drop_step_checkpoints_after(folder: Path, step: int) -> None:
    """Step checkpoints past the step a run starts from belong to the run it replaces (one started afresh in the
    same work_dir, or an attempt whose newer checkpoints could not be read): they would outrank the new ones."""
    for later, path in step_checkpoints(folder):
        if later > step:
            log.info("%s: removed, this run continues from step %d", path, step)
            path.unlink(missing_ok=True)


def newest_loadable(folder: Path, load: Callable[[Path], dict[str, Any]]) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint of ``folder`` that ``load`` reads (``last.pt``, then the step checkpoints, newest
    first), with what it read; None where there is none. A file it cannot read is logged and passed over."""
    candidates = [folder / LAST] if (folder / LAST).is_file() else []
    for path in [*candidates, *(path for _, path in step_checkpoints(folder))]:
        try:
            return path, load(path)
        except ValueError as exc:  # CheckpointError and the training loader's refusals name the file
            log.warning("cannot resume from %s (%s): trying the checkpoint before it", path, exc)
    return None
