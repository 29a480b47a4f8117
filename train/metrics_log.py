"""A run's metrics log: one row per epoch (and per evaluation) in work_dir/metrics.csv, the same values as
TensorBoard scalars in work_dir/tensorboard, and the training loss every few steps in TensorBoard only.

Only the main rank writes it. A resumed run continues both from the step it resumes at: rows and events that a
previous run wrote after that step (it went on past its last checkpoint, then died) are dropped, so the log
reads as one run whose steps only grow.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import time
from pathlib import Path

from qslr.model.losses import TERMS
from qslr.pipelines.atomic_output import write_text_atomic

log = logging.getLogger(__name__)

LOSS_COLUMNS = tuple(f"loss_{term}" for term in TERMS)  # each loss term, unweighted, averaged over the epoch
COLUMNS = ("epoch", "global_step", "lr", "train_loss", *LOSS_COLUMNS, "skipped_batches", "clips_per_s",
           "frames_per_s", "data_wait_fraction", "dev_wer", "dev_wer_conv", "epoch_seconds")

# TensorBoard groups scalars by the part of the tag before the slash: one chart section per group.
TENSORBOARD_TAGS = {
    "epoch": "progress/epoch",
    "lr": "optim/lr",
    "train_loss": "loss/train",
    **{column: f"loss/{column.removeprefix('loss_')}" for column in LOSS_COLUMNS},
    "skipped_batches": "progress/skipped_batches",
    "clips_per_s": "throughput/clips_per_s",
    "frames_per_s": "throughput/frames_per_s",
    "data_wait_fraction": "throughput/data_wait_fraction",
    "dev_wer": "wer/dev",
    "dev_wer_conv": "wer/dev_conv",
    "epoch_seconds": "progress/epoch_seconds",
}
STEP_LOSS_TAG = "loss/train_step"
TENSORBOARD_DIR = "tensorboard"


class MetricsLog:
    """Open it when training starts (after a resume), close it when training ends."""

    def __init__(self, work_dir: Path, start_step: int = 0):
        from torch.utils.tensorboard import SummaryWriter  # loads TensorBoard: only where a run logs

        self.path = Path(work_dir) / "metrics.csv"
        _continue_csv(self.path, start_step)
        directory = Path(work_dir) / TENSORBOARD_DIR
        _wait_for_a_later_second(directory)
        # purge_step writes a restart marker: TensorBoard hides the older events from that step on.
        self._writer = SummaryWriter(str(directory), purge_step=start_step + 1)

    def append(self, **values) -> None:
        """One row: every column of COLUMNS that is given (the others stay empty); global_step is required."""
        unknown = set(values) - set(COLUMNS)
        if unknown:
            raise KeyError(f"unknown metrics columns {sorted(unknown)}")
        with self.path.open("a", newline="") as handle:
            csv.writer(handle).writerow([_format(values.get(column)) for column in COLUMNS])
        step = int(values["global_step"])
        for column, tag in TENSORBOARD_TAGS.items():
            value = values.get(column)
            if value is not None and value != "" and math.isfinite(float(value)):
                self._writer.add_scalar(tag, float(value), step)
        self._writer.flush()  # an epoch's row is worth showing at once; step losses may wait in the queue

    def step_loss(self, global_step: int, loss: float) -> None:
        self._writer.add_scalar(STEP_LOSS_TAG, loss, global_step)

    def flush(self) -> None:
        """Write what TensorBoard has queued (a checkpoint's steps must be on disk before a failure could follow)."""
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def _format(value) -> str:
    if value is None:
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _continue_csv(path: Path, start_step: int) -> None:
    """Make ``path`` a metrics file with today's columns holding only the rows up to ``start_step``."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, _csv_text([]))
        return
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        header, rows = reader.fieldnames or [], list(reader)
    kept = [row for row in rows if _step_of(path, row) <= start_step]
    if tuple(header) == COLUMNS and len(kept) == len(rows):
        return
    if len(kept) < len(rows):
        log.warning("%s: dropping %d row(s) logged after step %d, where this run continues", path,
                    len(rows) - len(kept), start_step)
    if tuple(header) != COLUMNS:
        # Written before a column was added: the old rows keep their values under today's header.
        log.info("%s: rewriting its rows under the current columns", path)
    write_text_atomic(path, _csv_text(kept))


def _step_of(path: Path, row: dict[str, str]) -> int:
    try:
        return int(row["global_step"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{path}: a row without an integer global_step: {row}") from None


def _csv_text(rows: list[dict[str, str]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, COLUMNS, extrasaction="ignore", lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def read_metrics(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _wait_for_a_later_second(directory: Path) -> None:
    """TensorBoard reads a run's event files in the order of their names, which start with the second the
    file was made, then host, process and a counter compared as text (".10" before ".9"). A run resumed
    within the second of the previous file could be read before it, and its restart marker lost; so a new
    file is made only once the clock has passed every existing file's second (at most a second's wait)."""
    seconds = [int(part) for path in directory.glob("events.out.tfevents.*")
               if (part := path.name.split(".")[3]).isdigit()]
    if seconds:
        wait = max(seconds) + 1 - time.time()
        if wait > 0:
            time.sleep(wait)
