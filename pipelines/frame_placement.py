"""A video's frames placed on a model's frame rate by their presentation timestamps.

A model learns how fast a sign moves at its training rate (25 fps for Phoenix). A 60-fps video fed frame by frame
shows it signing at 2.4 times the speed; a variable-frame-rate phone video at a speed that changes. So each model
time k / fps (from the first frame's timestamp) takes the latest frame that started at or before it: frames of a
faster video are dropped, frames of a slower one repeated, and a video at the model's rate keeps every frame, bit
for bit. Placement runs as the frames arrive: what it holds is one frame's index, whatever the video's length.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Timestamps are read from containers in milliseconds or finer; a frame this close after a model time counts as
# started at it, so that float rounding of a 25-fps video's 0.04-s steps never drops or repeats a frame.
_TOLERANCE_S = 1e-6


@dataclass
class PlacementCounts:
    frames_in: int = 0
    frames_out: int = 0
    dropped: int = 0  # source frames no model time took
    repeated: int = 0  # model frames that repeat the frame before them


class FramePlacer:
    """Source frames, given in presentation order with their start times, -> for each, how many model frames
    take it. ``fps`` None or 0: the model states no rate, and every frame is kept once, as it comes."""

    def __init__(self, fps: float | None):
        self.fps = float(fps) if fps else None
        self.counts = PlacementCounts()
        self._first: float | None = None  # the first frame's start
        self._last_start: float | None = None
        self._next = 0  # the next model time's index

    def take(self, starts: Sequence[float]) -> np.ndarray:
        """The next frames' start times (seconds, in presentation order) -> the model frames of each frame they
        settle: a frame's share is known once the next frame's start is. So the counts are for the frame held from
        the call before (if any) and for each of these but the last, which is held in turn."""
        counts = []
        for start in starts:
            start = float(start)
            self.counts.frames_in += 1
            if self._last_start is None:
                self._first = self._last_start = start
                continue
            start = max(start, self._last_start)  # a timestamp going back: the frame starts when the last did
            counts.append(self._until(start))
            self._last_start = start
        return np.array(counts, dtype=np.int64)

    def finish(self, end: float | None) -> int:
        """The held (last) frame's share: the model times before ``end``, where the video's content ends (None,
        or no later than the frame's start: it lasts one model period)."""
        if self._last_start is None:
            return 0
        if end is None or end <= self._last_start:
            end = self._last_start + (1.0 / self.fps if self.fps else 0.0)
        return self._until(end)

    def _until(self, next_start: float) -> int:
        """The held frame's share: the model times from the next unplaced one up to ``next_start``."""
        if self.fps is None:
            count = 1
        else:
            stop = max(self._next, math.ceil((next_start - self._first - _TOLERANCE_S) * self.fps))
            count, self._next = stop - self._next, stop
        self.counts.frames_out += count
        self.counts.dropped += count == 0
        self.counts.repeated += max(0, count - 1)
        return count


def placed_frames(starts: Sequence[float], end: float | None, fps: float | None) -> int:
    """How many model frames a video of frames starting at ``starts`` (in any order) and ending at ``end`` gives."""
    placer = FramePlacer(fps)
    total = int(placer.take(sorted(starts)).sum())
    return total + placer.finish(end)


def place(frames: np.ndarray, starts: Sequence[float], end: float | None, fps: float | None
          ) -> tuple[np.ndarray, PlacementCounts]:
    """A whole video's frames (T, ...) at ``fps``: the same array where every frame is kept once."""
    placer = FramePlacer(fps)
    counts = np.concatenate([placer.take(starts), [placer.finish(end)]]) if len(frames) else np.zeros(0, np.int64)
    if len(counts) != len(frames):
        raise ValueError(f"{len(frames)} frames and {len(starts)} timestamps")
    if np.all(counts == 1):
        return frames, placer.counts
    return np.repeat(frames, counts, axis=0), placer.counts
