"""Long videos for testing and measuring recognition of videos of several sentences: clips of a prepared dataset's
split joined into one file, with the reference beside it (the clips' glosses in order, where each clip starts and
ends in the joined video, and, where the dataset knows them (pipelines/sign_spans.py), each gloss's sign frames).

The clips are decoded and re-encoded one at a time, so a joined video of any length never sits in memory whole.
The file appears only when complete (written under a temporary name, then renamed), and its reference after it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from qslr.pipelines.atomic_output import write_text_atomic
from qslr.pipelines.prepared import PreparedDataset, VideoRecord
from qslr.pipelines.sign_spans import SignSpan, read_sign_spans, span_from_dict
from qslr.pipelines.video_io import Vp9Settings, encode_video, read_video

# codec -> (container format, FFmpeg encoder, file suffix)
CODECS = {"vp9": ("webm", "libvpx-vp9", ".webm"), "h264": ("mp4", "libx264", ".mp4")}


class ConcatError(ValueError):
    """Clips that cannot be joined; the message names the clip or the request."""


@dataclass(frozen=True)
class JoinedPart:
    id: str
    glosses: str  # the clip's annotation, as in the dataset
    first_frame: int  # where the clip starts in the joined video
    frames: int
    start_s: float
    end_s: float


@dataclass(frozen=True)
class JoinedVideo:
    video: str  # the file's name, beside its reference
    codec: str
    fps: float
    frames: int
    glosses: str  # every part's glosses in order: the reference for the whole video
    parts: tuple[JoinedPart, ...]
    # Where each gloss is signed in the joined video, in order (empty where the dataset does not say).
    signs: tuple[SignSpan, ...] = ()

    @staticmethod
    def reference_path(video: str | Path) -> Path:
        return Path(video).with_suffix(".json")

    @classmethod
    def read(cls, video: str | Path) -> JoinedVideo:
        path = cls.reference_path(video)
        data = json.loads(path.read_text(encoding="utf-8"))
        signs = tuple(span_from_dict(sign, str(path)) for sign in data.get("signs", ()))
        return cls(**{**data, "parts": tuple(JoinedPart(**p) for p in data["parts"]), "signs": signs})

    def write_reference(self, video: str | Path) -> None:
        write_text_atomic(self.reference_path(video), json.dumps(asdict(self), indent=1) + "\n")


def choose_clips(dataset: PreparedDataset, split: str, count: int, first: int = 0) -> list[VideoRecord]:
    """Clips ``first`` .. ``first + count - 1`` of ``split``, in the split's order."""
    records = dataset.records(split)
    if count < 1 or first < 0:
        raise ConcatError(f"need at least one clip from a position of 0 or more, got {count} from {first}")
    if first + count > len(records):
        raise ConcatError(f"{dataset.root}: the {split} split has {len(records)} clips, {count} from position "
                          f"{first} asked")
    return records[first:first + count]


def join_clips(dataset: PreparedDataset, records: Sequence[VideoRecord], out: str | Path, codec: str = "vp9"
               ) -> JoinedVideo:
    """Write ``records``' videos one after the other to ``out`` in ``codec``, and the reference beside it."""
    if codec not in CODECS:
        raise ConcatError(f"unknown codec {codec!r} (known: {', '.join(CODECS)})")
    out = Path(out)
    parts: list[JoinedPart] = []
    fps = records[0].fps
    written = _encode(out, codec, fps, _frames_of(dataset, records, parts))
    joined = JoinedVideo(out.name, codec, fps, written, " ".join(r.glosses for r in records), tuple(parts),
                         _joined_signs(dataset, records, parts))
    joined.write_reference(out)
    return joined


def _joined_signs(dataset: PreparedDataset, records: Sequence[VideoRecord], parts: Sequence[JoinedPart]
                  ) -> tuple[SignSpan, ...]:
    """The clips' signs, each shifted to where its clip lands; none unless the dataset knows every clip's."""
    known: dict[str, tuple[SignSpan, ...]] = {}
    for split in dataset.splits():
        known.update(read_sign_spans(dataset.root, split) or {})
    if not all(record.id in known for record in records):
        return ()
    return tuple(span.shifted(part.first_frame) for record, part in zip(records, parts, strict=True)
                 for span in known[record.id])


def _frames_of(dataset: PreparedDataset, records: Sequence[VideoRecord], parts: list[JoinedPart]
               ) -> Iterator[np.ndarray]:
    """Each clip's frames in turn, recording where it lands; clips of another frame size or rate are refused."""
    first_frame = 0
    shape = None
    fps = records[0].fps
    for record in records:
        frames, clip_fps = read_video(dataset.video_path(record))
        if shape is None:
            shape = frames.shape[1:]
        if frames.shape[1:] != shape or abs((clip_fps or fps) - fps) > 1e-6:
            raise ConcatError(f"{record.id}: {frames.shape[2]}x{frames.shape[1]} at {clip_fps:g} fps, the clips "
                              f"before it are {shape[1]}x{shape[0]} at {fps:g} fps")
        parts.append(JoinedPart(record.id, record.glosses, first_frame, len(frames), round(first_frame / fps, 6),
                                round((first_frame + len(frames)) / fps, 6)))
        first_frame += len(frames)
        yield from frames


def _encode(path: Path, codec: str, fps: float, frames: Iterator[np.ndarray]) -> int:
    container_format, encoder, _ = CODECS[codec]
    # The VP9 settings are the corpus's own (deterministic, every coded frame shown); x264 at a like quality.
    options = (Vp9Settings().codec_options() if codec == "vp9" else
               {"crf": "18", "preset": "veryfast", "threads": "1", "bf": "0"})
    return encode_video(path, frames, fps, encoder, container_format, options, bitexact=True)
