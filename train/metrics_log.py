"""metrics.csv in the work directory: one row per epoch (and per evaluation), appended as training goes."""

from __future__ import annotations

import csv
from pathlib import Path

COLUMNS = ("epoch", "global_step", "lr", "train_loss", "skipped_batches", "clips_per_s", "frames_per_s",
           "data_wait_fraction", "dev_wer", "epoch_seconds")


class MetricsLog:
    def __init__(self, path: Path):
        self.path = path
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("w", newline="") as handle:
                csv.writer(handle).writerow(COLUMNS)

    def append(self, **values) -> None:
        unknown = set(values) - set(COLUMNS)
        if unknown:
            raise KeyError(f"unknown metrics columns {sorted(unknown)}")
        with self.path.open("a", newline="") as handle:
            csv.writer(handle).writerow([_format(values.get(column, "")) for column in COLUMNS])


def _format(value) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def read_metrics(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))
