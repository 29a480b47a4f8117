"""The raw RWTH-PHOENIX-Weather 2014 release layout (docs/corpora.md), for the synthetic corpus.

    phoenix-2014-multisigner/annotations/manual/<split>.corpus.csv     id|folder|signer|annotation
    phoenix-2014-multisigner/features/fullFrame-210x260px/<split>/<id>/1/<id>.avi_pid0_fn000000-0.png
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from qslr.pipelines.atomic_output import write_text_atomic

CORPUS_DIR = "phoenix-2014-multisigner"
FRAME_WIDTH, FRAME_HEIGHT = 210, 260
FRAMES_DIR = f"features/fullFrame-{FRAME_WIDTH}x{FRAME_HEIGHT}px"
CSV_HEADER = "id|folder|signer|annotation"


def frame_dir(raw_root: Path, split: str, video_id: str) -> Path:
    return raw_root / CORPUS_DIR / FRAMES_DIR / split / video_id / "1"


def frame_name(video_id: str, index: int) -> str:
    return f"{video_id}.avi_pid0_fn{index:06d}-0.png"


def corpus_csv_path(raw_root: Path, split: str) -> Path:
    return raw_root / CORPUS_DIR / "annotations" / "manual" / f"{split}.corpus.csv"


def write_corpus_csv(raw_root: Path, split: str, rows: Iterable[tuple[str, str, str]]) -> None:
    """Rows are (id, signer, annotation); the folder column is the release's glob pattern."""
    lines = [CSV_HEADER] + [f"{vid}|{vid}/1/*.png|{signer}|{annotation}" for vid, signer, annotation in rows]
    write_text_atomic(corpus_csv_path(raw_root, split), "\n".join(lines) + "\n")
