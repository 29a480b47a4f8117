"""Where each gloss of a video is signed, in frames: what the synthetic renderer knows of every sign it draws, kept
beside a prepared dataset (not part of its contract: real corpora annotate no such thing) so that latency can be
measured per gloss, from the last frame of its sign.

    <root>/sign_spans/<split>.jsonl   one line per video: {"id": ..., "signs": [{"gloss", "first_frame", "frames"}]}

A sign's frames are its own motion, without the transitions into and out of it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from qslr.pipelines.atomic_output import write_text_atomic
from qslr.pipelines.prepared import DatasetFormatError

FOLDER = "sign_spans"


@dataclass(frozen=True)
class SignSpan:
    gloss: str
    first_frame: int
    frames: int

    @property
    def stop(self) -> int:
        return self.first_frame + self.frames

    def shifted(self, frames: int) -> SignSpan:
        return SignSpan(self.gloss, self.first_frame + frames, self.frames)


def spans_path(root: str | Path, split: str) -> Path:
    return Path(root) / FOLDER / f"{split}.jsonl"


def write_sign_spans(root: str | Path, split: str, videos: Iterable[tuple[str, Sequence[SignSpan]]]) -> None:
    lines = [json.dumps({"id": video, "signs": [asdict(span) for span in spans]}) + "\n" for video, spans in videos]
    spans_path(root, split).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(spans_path(root, split), "".join(lines))


def span_from_dict(row: object, where: str) -> SignSpan:
    if not isinstance(row, dict) or set(row) != {"gloss", "first_frame", "frames"}:
        raise DatasetFormatError(f"{where}: a sign is {{gloss, first_frame, frames}}, got {row!r}")
    span = SignSpan(row["gloss"], row["first_frame"], row["frames"])
    if not (isinstance(span.gloss, str) and span.gloss and all(isinstance(v, int) and not isinstance(v, bool)
                                                                for v in (span.first_frame, span.frames))
            and span.first_frame >= 0 and span.frames > 0):
        raise DatasetFormatError(f"{where}: invalid sign {row!r}")
    return span


def read_sign_spans(root: str | Path, split: str) -> dict[str, tuple[SignSpan, ...]] | None:
    """Each video's signs by id, or None where the dataset has none for this split."""
    path = spans_path(root, split)
    if not path.is_file():
        return None
    spans: dict[str, tuple[SignSpan, ...]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetFormatError(f"{where}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("id"), str) or not isinstance(row.get("signs"), list):
            raise DatasetFormatError(f"{where}: expected {{\"id\": ..., \"signs\": [...]}}")
        spans[row["id"]] = tuple(span_from_dict(sign, where) for sign in row["signs"])
    return spans
