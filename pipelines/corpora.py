"""Readers of the corpus releases as they are distributed; each yields one RawRow per annotated video, or a refusal.

phoenix2014   phoenix-2014-multisigner/annotations/manual/<split>.corpus.csv  (id|folder|signer|annotation)
              frames: phoenix-2014-multisigner/features/fullFrame-210x260px/<split>/<id>/1/*.png
phoenix2014t  PHOENIX-2014-T/annotations/manual/PHOENIX-2014-T.<split>.corpus.csv
              (name|video|start|end|speaker|orth|translation); the video field says <name>/1/*.png, but the
              frames lie in PHOENIX-2014-T/features/fullFrame-210x260px/<split>/<name>/images0001.png, ...
csl-daily     CSL-Daily/sentence_label/video_map.txt (index|name|length|gloss|char|word|postag) and
              CSL-Daily/sentence_label/split_1.txt (name|split); frames: CSL-Daily/sentence/frames_512x512/<name>/
              000000.jpg, ... (some copies: sentence_frames-512x512/frames_512x512/); the signer is the name's P field
folder        a team's own recordings: video files (any container and codec FFmpeg reads) and one annotation table,
              <root>/*.csv or *.tsv (or --root naming the table), with a header naming the columns file, glosses,
              signer, split (any order, others ignored); file is relative to the table's folder

--root may be the release folder or a folder above it. What each rule rests on, with sources: docs/corpora.md.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from qslr.pipelines.prepared import SPLITS

UNKNOWN_SPLIT = "?"

# Short causes, shared by every reader, by which refusals are grouped and counted in reports.
FIELD_COUNT = "wrong field count"
KNOWN_BROKEN = "known broken video"
NOT_IN_SPLIT_FILE = "not in the split file"
UNKNOWN_SPLIT_NAME = "unknown split name"
NO_ANNOTATION = "listed but not annotated"
MISSING_VIDEO = "missing video file"


class CorpusFormatError(ValueError):
    """A whole annotation file or folder is unusable (missing, wrong header); the message names it."""


@dataclass(frozen=True)
class RawRow:
    split: str
    id: str
    frames: Path  # a glob pattern of the frame files, or the video file of a corpus of videos
    signer: str
    annotation: str
    where: str  # file:line of the annotation, for reports


@dataclass(frozen=True)
class Refusal:
    split: str
    id: str
    where: str
    reason: str  # the whole explanation, for the per-row report
    cause: str  # one of a few short phrases: the summary groups and counts by it


@dataclass(frozen=True)
class Corpus:
    read: Callable[[Path], Iterator[RawRow | Refusal]]
    normalisation: str  # of the references written to <split>.stm
    fps: float
    # (width, height) of the release's frames, which the preparation resizes to the frame size as the original
    # code does (Phoenix's 210x260 squashed to 256x256): what a model's frames show, recorded in its checkpoint.
    # None: a corpus of videos, framed to the aspect and rate the preparation is asked for (pipelines/framing.py).
    source_size: tuple[int, int] | None

    @property
    def videos(self) -> bool:
        return self.source_size is None


def _locate(root: Path, name: str, marker: str) -> Path:
    """The release folder: ``root`` itself or the folder one or two levels below it that holds ``marker``.

    Two levels, because Phoenix-2014-T unpacks as PHOENIX-2014-T-release-v3/PHOENIX-2014-T.
    """
    if (root / marker).is_file():
        return root
    for pattern in ("*", "*/*"):
        found = sorted(p for p in root.glob(pattern) if (p / marker).is_file())
        named = [p for p in found if p.name.lower() == name.lower()]
        if len(found) == 1 or len(named) == 1:
            return (named or found)[0]
        if found:
            raise CorpusFormatError(f"{root}: holds several {name} releases ({', '.join(map(str, found))}); "
                                    f"pass one of them as --root")
    raise CorpusFormatError(f"{root}: no {name} release here or in the two folder levels below it "
                            f"(looked for {marker})")


def _table(path: Path, header: str) -> Iterator[tuple[int, list[str]]]:
    """The rows of a '|'-separated annotation file, by line number, after checking its header."""
    if not path.is_file():
        raise CorpusFormatError(f"{path}: annotation file not found")
    try:
        # utf-8-sig drops a byte-order mark; split on "\n" only, since str.splitlines would also break a row at
        # characters such as U+2028 inside an annotation, and shift every line number after it.
        lines = path.read_text(encoding="utf-8-sig").split("\n")
    except UnicodeDecodeError as exc:
        raise CorpusFormatError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    found = lines[0].strip() if lines[0].strip() else "an empty first line"
    if found != header:
        raise CorpusFormatError(f"{path}: expected the header {header!r}, found {found!r}")
    for line_no, line in enumerate(lines[1:], start=2):
        if line.strip():
            yield line_no, [field.strip() for field in line.split("|")]


def _frames_root(base: Path, *candidates: str) -> Path:
    for candidate in candidates:
        if (base / candidate).is_dir():
            return base / candidate
    raise CorpusFormatError(f"{base}: no frame folder ({' or '.join(candidates)})")


# The original drops one known-broken training video, by its position among the rows (docs/corpora.md).
PHOENIX2014_BROKEN_TRAIN_ROW = 2390


def read_phoenix2014(root: Path) -> Iterator[RawRow | Refusal]:
    base = _locate(root, "phoenix-2014-multisigner", "annotations/manual/train.corpus.csv")
    frames_root = _frames_root(base, "features/fullFrame-210x260px")
    for split in SPLITS:
        csv = base / "annotations" / "manual" / f"{split}.corpus.csv"
        for row_index, (line_no, fields) in enumerate(_table(csv, "id|folder|signer|annotation")):
            where = f"{csv}:{line_no}"
            if len(fields) != 4:
                yield Refusal(split, fields[0], where, f"expected 4 '|'-separated fields, got {len(fields)}",
                              FIELD_COUNT)
            elif split == "train" and row_index == PHOENIX2014_BROKEN_TRAIN_ROW:
                yield Refusal(split, fields[0], where, "the known broken training video the original drops",
                              KNOWN_BROKEN)
            else:
                yield RawRow(split, fields[0], frames_root / split / fields[1], fields[2], fields[3], where)


def _phoenix2014t_frames(split_dir: Path, video: str) -> Path:
    """The frame pattern of one Phoenix-2014-T video.

    The CSV's ``<name>/1/*.png`` is the multisigner layout copied over: the v3 release keeps the frames
    directly in ``<name>/``. The written form is kept where it exists (a re-packed copy), else the real one.
    """
    written = split_dir / video
    if written.parent.is_dir() or written.parent.name != "1":
        return written
    return written.parent.parent / written.name


def read_phoenix2014t(root: Path) -> Iterator[RawRow | Refusal]:
    base = _locate(root, "PHOENIX-2014-T", "annotations/manual/PHOENIX-2014-T.train.corpus.csv")
    frames_root = _frames_root(base, "features/fullFrame-210x260px")
    for split in SPLITS:
        csv = base / "annotations" / "manual" / f"PHOENIX-2014-T.{split}.corpus.csv"
        for line_no, fields in _table(csv, "name|video|start|end|speaker|orth|translation"):
            where = f"{csv}:{line_no}"
            if len(fields) != 7:
                yield Refusal(split, fields[0], where, f"expected 7 '|'-separated fields, got {len(fields)}",
                              FIELD_COUNT)
            else:
                yield RawRow(split, fields[0], _phoenix2014t_frames(frames_root / split, fields[1]), fields[4],
                             fields[5], where)


# split_1.txt leaves out one annotated video, which the reference preprocessing puts in train, and lists in
# its place one that video_map.txt does not annotate (docs/corpora.md). Other gaps are refused: a different
# split file must not move dev or test videos into train unnoticed.
CSL_DAILY_UNLISTED_TRAIN = "S000007_P0003_T00"
CSL_DAILY_LISTED_UNANNOTATED = "S000005_P0004_T00"
_CSL_DAILY_SPLITS = {"train": "train", "dev": "dev", "val": "dev", "test": "test"}


def _csl_daily_splits(split_file: Path) -> tuple[dict[str, tuple[str, str]], list[Refusal]]:
    """name -> (split, file:line) from split_1.txt, and its unusable lines."""
    assigned: dict[str, tuple[str, str]] = {}
    refused: list[Refusal] = []
    for line_no, fields in _table(split_file, "name|split"):
        where = f"{split_file}:{line_no}"
        if len(fields) != 2:
            refused.append(Refusal(UNKNOWN_SPLIT, fields[0], where,
                                   f"expected 2 '|'-separated fields, got {len(fields)}", FIELD_COUNT))
        elif fields[1] not in _CSL_DAILY_SPLITS:
            refused.append(Refusal(UNKNOWN_SPLIT, fields[0], where, f"unknown split {fields[1]!r}",
                                   UNKNOWN_SPLIT_NAME))
        else:
            assigned[fields[0]] = (_CSL_DAILY_SPLITS[fields[1]], where)
    return assigned, refused


def read_csl_daily(root: Path) -> Iterator[RawRow | Refusal]:
    base = _locate(root, "CSL-Daily", "sentence_label/video_map.txt")
    frames_root = _frames_root(base, "sentence/frames_512x512", "sentence_frames-512x512/frames_512x512")
    split_file = base / "sentence_label" / "split_1.txt"
    assigned, refused = _csl_daily_splits(split_file)
    yield from refused
    video_map = base / "sentence_label" / "video_map.txt"
    annotated: set[str] = set()
    for line_no, fields in _table(video_map, "index|name|length|gloss|char|word|postag"):
        where = f"{video_map}:{line_no}"
        if len(fields) != 7:
            yield Refusal(UNKNOWN_SPLIT, fields[0], where, f"expected 7 '|'-separated fields, got {len(fields)}",
                          FIELD_COUNT)
            continue
        name = fields[1]
        annotated.add(name)
        split = assigned.get(name, ("train" if name == CSL_DAILY_UNLISTED_TRAIN else None, ""))[0]
        if split is None:
            yield Refusal(UNKNOWN_SPLIT, name, where, f"not assigned to a split in {split_file}", NOT_IN_SPLIT_FILE)
            continue
        signer = next((part for part in name.split("_") if part.startswith("P")), "unknown")
        yield RawRow(split, name, frames_root / name / "*.jpg", signer, fields[3], where)
    for name, (split, where) in assigned.items():
        if name not in annotated and name != CSL_DAILY_LISTED_UNANNOTATED:
            yield Refusal(split, name, where, f"listed in the split file but not annotated in {video_map}",
                          NO_ANNOTATION)


FOLDER_COLUMNS = ("file", "glosses", "signer", "split")
_FOLDER_SPLITS = {"train": "train", "dev": "dev", "val": "dev", "validation": "dev", "test": "test"}


def _folder_table(root: Path) -> Path:
    if root.is_file():
        return root
    tables = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in (".csv", ".tsv"))
    if len(tables) != 1:
        found = f"found {', '.join(p.name for p in tables)}" if tables else "found none"
        raise CorpusFormatError(f"{root}: expected one annotation table (.csv or .tsv, with the columns "
                                f"{', '.join(FOLDER_COLUMNS)}) in the folder, {found}; pass the table as --root")
    return tables[0]


def folder_video_id(file: str) -> str:
    """A video's id: its path in the folder without the extension, every character other than letters, digits,
    '.', '-' and '_' (a '/', a space) made '_'."""
    return re.sub(r"[^\w.-]", "_", str(Path(file).with_suffix("")), flags=re.ASCII)


def read_folder(root: Path) -> Iterator[RawRow | Refusal]:
    table = _folder_table(root)
    try:
        text = table.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CorpusFormatError(f"{table}: not UTF-8 text (byte {exc.start})") from None
    # A StringIO, not str.splitlines, which would also break a row at characters such as U+2028.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t" if table.suffix.lower() == ".tsv" else ",")
    header = [name.strip().lower() for name in next(reader, [])]
    missing = [name for name in FOLDER_COLUMNS if name not in header]
    if missing:
        raise CorpusFormatError(f"{table}:1: the header must name the columns {', '.join(FOLDER_COLUMNS)}; "
                                f"it lacks {', '.join(missing)}")
    column = {name: header.index(name) for name in FOLDER_COLUMNS}
    for fields in reader:
        where = f"{table}:{reader.line_num}"
        if not any(field.strip() for field in fields):
            continue
        values = {name: fields[index].strip() if index < len(fields) else "" for name, index in column.items()}
        video_id = folder_video_id(values["file"]) if values["file"] else f"line{reader.line_num}"
        split = _FOLDER_SPLITS.get(values["split"].lower())
        if len(fields) != len(header):
            yield Refusal(split or UNKNOWN_SPLIT, video_id, where,
                          f"expected {len(header)} fields as the header has, got {len(fields)}", FIELD_COUNT)
        elif split is None:
            yield Refusal(UNKNOWN_SPLIT, video_id, where, f"unknown split {values['split']!r} (train, dev or test)",
                          UNKNOWN_SPLIT_NAME)
        elif not (table.parent / values["file"]).is_file():
            yield Refusal(split, video_id, where, f"no video file {table.parent / values['file']}", MISSING_VIDEO)
        else:
            yield RawRow(split, video_id, table.parent / values["file"], values["signer"].replace(" ", "_") or
                         "unknown", values["glosses"], where)


CORPORA: dict[str, Corpus] = {
    "phoenix2014": Corpus(read_phoenix2014, "phoenix2014", 25.0, (210, 260)),
    "phoenix2014t": Corpus(read_phoenix2014t, "phoenix2014", 25.0, (210, 260)),
    "csl-daily": Corpus(read_csl_daily, "none", 30.0, (512, 512)),
    # Its videos are placed on the rate the preparation is asked for; by default Phoenix's.
    "folder": Corpus(read_folder, "none", 25.0, None),
}
