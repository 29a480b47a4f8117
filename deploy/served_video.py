"""Uploaded videos -> the frames the served model takes: decoded, checked against the served limits, resized.

One code path for everything that recognises a video file: the Triton `preprocess` model and local
recognition (`qslr recognise`) both call a `ClipDecoder`, so a video gets the same frames, and the same
answer, whichever way it is recognised. A batch of videos goes in; each comes back as a `DecodedClip` or
as the error that refuses it alone, so one bad upload never fails the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deploy.served_limits import ServedLimits
from pipelines.video_io import VideoDecodeError, read_video, resize_frames

Video = bytes | str | Path


@dataclass(frozen=True)
class DecodedClip:
    frames: np.ndarray  # uint8 (T, H, W, 3) at the model's frame size; T is the video's own frame count
    fps: float  # the video's frame rate, 0.0 where its container states none


class PyAVClipDecoder:
    """FFmpeg through PyAV: every container and codec FFmpeg reads, one video after another."""

    name = "pyav"

    def __init__(self, height: int, width: int, limits: ServedLimits):
        self.height, self.width, self.limits = height, width, limits

    def decode_one(self, video: Video) -> DecodedClip:
        frames, fps = read_video(video)
        self.limits.check_length(len(frames))
        return DecodedClip(resize_frames(frames, self.height, self.width), fps)

    def decode(self, videos: Sequence[Video]) -> list[DecodedClip | Exception]:
        results: list[DecodedClip | Exception] = []
        for video in videos:
            try:
                results.append(self.decode_one(video))
            except (VideoDecodeError, ValueError) as exc:
                results.append(exc)
        return results


DECODERS = {"pyav": PyAVClipDecoder}


def clip_decoder(name: str, height: int, width: int, limits: ServedLimits):
    if name not in DECODERS:
        raise ValueError(f"unknown video decoder {name!r} (known: {', '.join(DECODERS)})")
    return DECODERS[name](height, width, limits)
