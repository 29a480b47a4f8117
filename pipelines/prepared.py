"""The prepared-dataset format, the one contract between data sources and everything downstream.

    <root>/vocab.json                gloss -> id (1..N); id 0 is reserved for the CTC blank
    <root>/<split>.jsonl             one VideoRecord per line
    <root>/<split>.stm               normalised reference transcripts (sclite STM)
    <root>/videos/<split>/<id>.webm  the video, VP9
    <root>/framing.json              how the frames were made from the source videos (pipelines/source_framing.py):
                                     {"aspect": width / height of the source picture, "rule": resize|crop|letterbox};
                                     datasets prepared before it was written lack it
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from qslr.pipelines.atomic_output import write_text_atomic
from qslr.pipelines.source_framing import SourceFraming

VOCAB_FILE = "vocab.json"
FRAMING_FILE = "framing.json"
BLANK_ID = 0
SPLITS = ("train", "dev", "test")


class DatasetFormatError(ValueError):
    """A prepared-dataset file breaks the format; the message names the file and row."""


@dataclass(frozen=True)
class VideoRecord:
    id: str
    video: str  # path relative to the dataset root
    num_frames: int
    signer: str
    glosses: str  # the raw annotation, space separated; normalisation happens only when scoring
    fps: float
    height: int
    width: int

    def gloss_list(self) -> list[str]:
        return self.glosses.split()


_FIELD_TYPES = {f.name: f.type for f in fields(VideoRecord)}
_CHECKS = {
    "id": lambda v: isinstance(v, str) and v != "" and not any(c.isspace() for c in v),
    "video": lambda v: isinstance(v, str) and v != "" and not Path(v).is_absolute(),
    "num_frames": lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
    "signer": lambda v: isinstance(v, str) and v != "" and not any(c.isspace() for c in v),
    "glosses": lambda v: isinstance(v, str),
    "fps": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0,
    "height": lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
    "width": lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
}


def record_from_row(row: object, where: str) -> VideoRecord:
    if not isinstance(row, dict):
        raise DatasetFormatError(f"{where}: expected a JSON object, got {type(row).__name__}")
    missing = [name for name in _FIELD_TYPES if name not in row]
    if missing:
        raise DatasetFormatError(f"{where}: missing field(s) {', '.join(missing)}")
    unknown = sorted(set(row) - set(_FIELD_TYPES))
    if unknown:
        raise DatasetFormatError(f"{where}: unknown field(s) {', '.join(unknown)}")
    for name, check in _CHECKS.items():
        if not check(row[name]):
            raise DatasetFormatError(f"{where}: invalid {name} {row[name]!r}")
    return VideoRecord(**{**row, "fps": float(row["fps"])})


def read_records(path: str | Path) -> list[VideoRecord]:
    """Read and validate a ``<split>.jsonl``; duplicate ids are an error."""
    path = Path(path)
    records: list[VideoRecord] = []
    seen: dict[str, int] = {}
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetFormatError(f"{where}: not valid JSON ({exc.msg})") from None
            record = record_from_row(row, where)
            if record.id in seen:
                raise DatasetFormatError(f"{where}: duplicate id {record.id!r} (first on line {seen[record.id]})")
            seen[record.id] = line_no
            records.append(record)
    return records


def records_to_jsonl(records: Iterable[VideoRecord]) -> str:
    return "".join(json.dumps(asdict(r), ensure_ascii=False) + "\n" for r in records)


def write_records(path: str | Path, records: Iterable[VideoRecord]) -> None:
    write_text_atomic(path, records_to_jsonl(records))


def build_vocab(annotations: Iterable[Sequence[str]]) -> dict[str, int]:
    """The original's gloss dictionary: the union of all glosses, sorted, numbered from 1."""
    glosses = sorted({g for sentence in annotations for g in sentence})
    return {gloss: index for index, gloss in enumerate(glosses, start=BLANK_ID + 1)}


def vocab_to_json(vocab: dict[str, int]) -> str:
    return json.dumps(vocab, ensure_ascii=False, indent=1) + "\n"


def write_vocab(path: str | Path, vocab: dict[str, int]) -> None:
    write_text_atomic(path, vocab_to_json(vocab))


def read_vocab(path: str | Path) -> dict[str, int]:
    path = Path(path)
    try:
        vocab = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetFormatError(f"{path}: not valid JSON ({exc.msg})") from None
    if not isinstance(vocab, dict) or not vocab:
        raise DatasetFormatError(f"{path}: expected a non-empty object gloss -> id")
    ids = sorted(vocab.values())
    if any(not isinstance(i, int) or isinstance(i, bool) for i in ids) or ids != list(range(1, len(ids) + 1)):
        raise DatasetFormatError(f"{path}: ids must be the integers 1..{len(ids)} (0 is the CTC blank)")
    return vocab


# What a pickled numpy array of a dict may name: numpy's own reconstruction of an array, its dtype and scalars.
# Unpickling anything else could run code of whoever made the file.
_GLOSS_DICT_GLOBALS = frozenset({(module, name) for module in ("numpy.core.multiarray", "numpy._core.multiarray")
                                 for name in ("_reconstruct", "scalar")} | {("numpy", "ndarray"), ("numpy", "dtype")})


class _GlossDictUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _GLOSS_DICT_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it names {module}.{name}, which a gloss dictionary never does "
                                     f"(refused: unpickling it could run code)")


def _load_gloss_dict(path: Path) -> object:
    """The object a `np.save` of a dict wrote, unpickled with only numpy's array globals allowed."""
    with path.open("rb") as handle:
        version = np.lib.format.read_magic(handle)
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        _, _, dtype = reader(handle)
        if not dtype.hasobject:
            raise ValueError(f"holds a {dtype} array, not a pickled dictionary")
        return _GlossDictUnpickler(handle).load()


def read_any_vocab(path: Path) -> dict[str, int]:
    """A prepared dataset's vocab.json, or the original code's gloss_dict.npy ({gloss: [id, count]})."""
    if path.suffix == ".npy":
        try:
            table = np.asarray(_load_gloss_dict(path)).item()
            vocab = {str(gloss): int(entry[0]) for gloss, entry in table.items()}
        except (ValueError, TypeError, AttributeError, IndexError, OSError, EOFError, pickle.UnpicklingError) as exc:
            raise DatasetFormatError(f"{path}: not a gloss dictionary ({exc})") from None
        if sorted(vocab.values()) != list(range(1, len(vocab) + 1)):
            raise DatasetFormatError(f"{path}: gloss ids must be 1..{len(vocab)}")
        return vocab
    return read_vocab(path)


class PreparedDataset:
    """Read access to a prepared dataset directory."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not (self.root / VOCAB_FILE).is_file():
            raise DatasetFormatError(f"{self.root}: not a prepared dataset ({VOCAB_FILE} is missing)")

    @property
    def vocab(self) -> dict[str, int]:
        return read_vocab(self.root / VOCAB_FILE)

    def splits(self) -> list[str]:
        present = {p.stem for p in self.root.glob("*.jsonl")}
        return [s for s in SPLITS if s in present] + sorted(present - set(SPLITS))

    def records(self, split: str) -> list[VideoRecord]:
        path = self.root / f"{split}.jsonl"
        if not path.is_file():
            raise DatasetFormatError(f"{self.root}: split {split!r} has no {path.name}")
        return read_records(path)

    def video_path(self, record: VideoRecord) -> Path:
        return self.root / record.video

    def stm_path(self, split: str) -> Path:
        return self.root / f"{split}.stm"

    def source_framing(self) -> SourceFraming | None:
        """How the frames were made from the source videos; None for a dataset prepared before it was recorded."""
        path = self.root / FRAMING_FILE
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DatasetFormatError(f"{path}: not valid JSON ({exc.msg})") from None
        try:
            return SourceFraming.from_dict(data, str(path))
        except ValueError as exc:
            raise DatasetFormatError(str(exc)) from None


def write_source_framing(root: str | Path, framing: SourceFraming) -> None:
    """Before vocab.json: a dataset is complete only once it says how its frames were made."""
    write_text_atomic(Path(root) / FRAMING_FILE, json.dumps(framing.to_dict()) + "\n")


def video_relpath(split: str, video_id: str) -> str:
    return f"videos/{split}/{video_id}.webm"
