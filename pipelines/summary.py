"""What a prepared dataset holds, or what a preparation made and refused: per split, and on disk."""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from qslr.pipelines.corpora import UNKNOWN_SPLIT
from qslr.pipelines.prepared import PreparedDataset

if TYPE_CHECKING:
    from qslr.pipelines.prepare import PrepareReport


@dataclass(frozen=True)
class SplitSummary:
    split: str
    videos: int
    frames: int
    min_frames: int
    mean_frames: float
    max_frames: int
    gloss_tokens: int
    distinct_glosses: int
    signers: tuple[str, ...]
    hours: float


@dataclass(frozen=True)
class DatasetSummary:
    root: str
    vocabulary: int
    disk_bytes: int
    splits: tuple[SplitSummary, ...]

    def to_dict(self) -> dict:
        return asdict(self)


def summarise(root: str | Path) -> DatasetSummary:
    dataset = PreparedDataset(root)
    splits = []
    for split in dataset.splits():
        records = dataset.records(split)
        frames = [r.num_frames for r in records]
        glosses = [g for r in records for g in r.gloss_list()]
        splits.append(SplitSummary(
            split=split,
            videos=len(records),
            frames=sum(frames),
            min_frames=min(frames, default=0),
            mean_frames=sum(frames) / len(frames) if frames else 0.0,
            max_frames=max(frames, default=0),
            gloss_tokens=len(glosses),
            distinct_glosses=len(set(glosses)),
            signers=tuple(sorted({r.signer for r in records})),
            hours=sum(r.num_frames / r.fps for r in records) / 3600,
        ))
    disk = sum(p.stat().st_size for p in dataset.root.rglob("*") if p.is_file())
    return DatasetSummary(str(dataset.root), len(dataset.vocab), disk, tuple(splits))


def _size(num_bytes: int) -> str:
    value = float(num_bytes)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def _console() -> Console:
    # Off a terminal rich assumes 80 columns, which would fold the table; logs have room for more.
    return Console(width=None if sys.stdout.isatty() else 110)


def print_summary(summary: DatasetSummary, console: Console | None = None) -> None:
    console = console or _console()
    table = Table(title=f"{summary.root}: {summary.vocabulary} glosses, {_size(summary.disk_bytes)} on disk")
    for column in ("split", "videos", "frames", "min", "mean", "max", "glosses", "distinct", "signers", "hours"):
        table.add_column(column, justify="left" if column == "split" else "right")
    for s in summary.splits:
        table.add_row(s.split, str(s.videos), str(s.frames), str(s.min_frames), f"{s.mean_frames:.1f}",
                      str(s.max_frames), str(s.gloss_tokens), str(s.distinct_glosses), str(len(s.signers)),
                      f"{s.hours:.2f}")
    console.print(table)
    console.print("frames per video: min / mean / max; glosses: tokens in the annotations; distinct: glosses used")
    for s in summary.splits:
        console.print(f"{s.split} signers: {', '.join(s.signers)}")


def print_prepare_report(report: PrepareReport, out: Path, console: Console | None = None) -> None:
    """The per-split table of a preparation: what was made, and what was refused for which cause."""
    console = console or _console()
    state = f"complete, {report.vocabulary} glosses" if report.complete else "NOT complete, no vocab.json"
    table = Table(title=f"{out} ({report.corpus}, {state}): {_size(report.disk_bytes)} on disk, "
                        f"{report.resumed} videos kept from an earlier run")
    for column in ("split", "videos", "frames", "glosses", "signers", "refused", "refused by cause"):
        table.add_column(column, justify="left" if column in ("split", "refused by cause") else "right")
    for split, s in report.splits.items():
        causes = ", ".join(f"{cause} {count}" for cause, count in sorted(s.refused.items(), key=lambda c: -c[1]))
        table.add_row(split, str(s.videos), str(s.frames), str(s.glosses), str(s.signers),
                      str(sum(s.refused.values())), causes or "-")
    console.print(table)
    unknown = "; split ?: rows refused before their split was known" if UNKNOWN_SPLIT in report.splits else ""
    console.print(f"glosses: distinct glosses in the split's annotations{unknown}")
