"""Readers of the published corpus layouts; each yields one RawRow per annotated video, or a refusal.

phoenix2014   phoenix-2014-multisigner/annotations/manual/<split>.corpus.csv  (id|folder|signer|annotation)
              frames: phoenix-2014-multisigner/features/fullFrame-210x260px/<split>/<folder glob>
phoenix2014t  PHOENIX-2014-T/annotations/manual/PHOENIX-2014-T.<split>.corpus.csv
              (name|video|start|end|speaker|orth|translation)
              frames: PHOENIX-2014-T/features/fullFrame-210x260px/<split>/<video glob>
csl-daily     sentence_label/video_map.txt (index|name|length|gloss|char|word|postag), sentence_label/split_1.txt
              (name|split), frames: sentence/frames_512x512/<name>/*.jpg; the signer is the name's P field
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

SPLITS = ("train", "dev", "test")


class CorpusFormatError(ValueError):
    """A whole annotation file is unusable (missing, wrong header); the message names it."""


@dataclass(frozen=True)
class RawRow:
    split: str
    id: str
    frames: Path  # a glob pattern of the frame files
    signer: str
    annotation: str
    where: str  # file:line of the annotation, for reports


@dataclass(frozen=True)
class Refusal:
    split: str
    id: str
    where: str
    reason: str


@dataclass(frozen=True)
class Corpus:
    read: Callable[[Path], Iterator[RawRow | Refusal]]
    normalisation: str  # of the references written to <split>.stm
    fps: float


def _locate(root: Path, folder: str) -> Path:
    """Accept the release folder itself or the folder above it."""
    return root if root.name == folder or not (root / folder).is_dir() else root / folder


def _table(path: Path, header: str) -> Iterator[tuple[int, list[str]]]:
    if not path.is_file():
        raise CorpusFormatError(f"{path}: annotation file not found")
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or lines[0].strip() != header:
        found = lines[0].strip() if lines else "an empty file"
        raise CorpusFormatError(f"{path}: expected the header {header!r}, found {found!r}")
    for line_no, line in enumerate(lines[1:], start=2):
        if line.strip():
            yield line_no, line.rstrip("\n").split("|")


# The original drops one known-broken training video, by its position among the rows (vac_spec.md 4.3).
PHOENIX2014_BROKEN_TRAIN_ROW = 2390


def read_phoenix2014(root: Path) -> Iterator[RawRow | Refusal]:
    base = _locate(root, "phoenix-2014-multisigner")
    for split in SPLITS:
        csv = base / "annotations" / "manual" / f"{split}.corpus.csv"
        frames = base / "features" / "fullFrame-210x260px" / split
        for row_index, (line_no, fields) in enumerate(_table(csv, "id|folder|signer|annotation")):
            where = f"{csv}:{line_no}"
            if len(fields) != 4:
                yield Refusal(split, fields[0], where, f"expected 4 '|'-separated fields, got {len(fields)}")
            elif split == "train" and row_index == PHOENIX2014_BROKEN_TRAIN_ROW:
                yield Refusal(split, fields[0], where, "the known broken training video the original drops")
            else:
                yield RawRow(split, fields[0], frames / fields[1], fields[2], fields[3], where)


def read_phoenix2014t(root: Path) -> Iterator[RawRow | Refusal]:
    base = _locate(root, "PHOENIX-2014-T")
    for split in SPLITS:
        csv = base / "annotations" / "manual" / f"PHOENIX-2014-T.{split}.corpus.csv"
        frames = base / "features" / "fullFrame-210x260px" / split
        for line_no, fields in _table(csv, "name|video|start|end|speaker|orth|translation"):
            where = f"{csv}:{line_no}"
            if len(fields) != 7:
                yield Refusal(split, fields[0], where, f"expected 7 '|'-separated fields, got {len(fields)}")
            else:
                yield RawRow(split, fields[0], frames / fields[1], fields[4], fields[5], where)


def read_csl_daily(root: Path) -> Iterator[RawRow | Refusal]:
    labels = root / "sentence_label"
    split_file = labels / "split_1.txt"
    splits = {fields[0]: (fields[1], line_no) for line_no, fields in _table(split_file, "name|split")
              if len(fields) == 2}
    video_map = labels / "video_map.txt"
    for line_no, fields in _table(video_map, "index|name|length|gloss|char|word|postag"):
        where = f"{video_map}:{line_no}"
        if len(fields) != 7:
            yield Refusal("?", fields[0], where, f"expected 7 '|'-separated fields, got {len(fields)}")
            continue
        name = fields[1]
        split = {"train": "train", "dev": "dev", "test": "test", "val": "dev"}.get(splits.get(name, ("",))[0])
        if split is None:
            yield Refusal("?", name, where, f"not assigned to a split in {split_file}")
            continue
        signer = next((part for part in name.split("_") if part.startswith("P")), "unknown")
        yield RawRow(split, name, root / "sentence" / "frames_512x512" / name / "*.jpg", signer, fields[3], where)


CORPORA: dict[str, Corpus] = {
    "phoenix2014": Corpus(read_phoenix2014, "phoenix2014", 25.0),
    "phoenix2014t": Corpus(read_phoenix2014t, "phoenix2014", 25.0),
    "csl-daily": Corpus(read_csl_daily, "none", 30.0),
}
