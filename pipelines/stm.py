"""sclite STM reference files: ``<id> 1 <speaker> <start> <end> <words>``, one utterance a line."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from qslr.pipelines.atomic_output import write_text_atomic

# The original references span the whole file: scoring aligns by word order, not by time.
WHOLE_FILE_START = "0.0"
WHOLE_FILE_END = "1.79769e+308"


@dataclass(frozen=True)
class StmEntry:
    utterance: str
    speaker: str
    words: tuple[str, ...]


def stm_line(entry: StmEntry) -> str:
    return " ".join([entry.utterance, "1", entry.speaker, WHOLE_FILE_START, WHOLE_FILE_END, *entry.words])


def write_stm(path: str | Path, entries: Iterable[StmEntry]) -> None:
    write_text_atomic(path, "".join(stm_line(e) + "\n" for e in entries))


def read_stm(path: str | Path) -> list[StmEntry]:
    path = Path(path)
    entries = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.startswith(";;"):
            continue
        parts = line.split()
        if len(parts) < 5:
            raise ValueError(f"{path}:{line_no}: an STM line needs at least 5 fields, got {len(parts)}")
        entries.append(StmEntry(parts[0], parts[2], tuple(parts[5:])))
    return entries
