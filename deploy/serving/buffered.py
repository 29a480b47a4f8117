"""Buffered recognition of long videos, as speech recognisers run CTC models over long audio: the frames are cut
into windows that overlap by some context on each side, the visual model runs on the windows (as one batch, the
served signature unchanged), each window keeps only the output steps of its middle part, and the kept steps,
joined, are decoded once as the whole video's.

The served model gives one output step per ``stride`` frames, step j of a clip standing for its frames
``stride * j`` to ``stride * j + stride - 1`` (the temporal padding is laid out so). So a window starting at a
multiple of the stride has its steps on the video's own step grid, and the kept steps of consecutive windows
join without a gap or an overlap into exactly the steps the whole video would have. A video no longer than one
window is one window: the path, and the log-probabilities, of recognising it whole.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Window:
    start: int  # first frame, in the video
    stop: int  # one past the last frame
    keep_start: int  # first output step kept, in the window's own steps
    keep_stop: int  # one past the last step kept


@dataclass(frozen=True)
class WindowPlan:
    window: int  # frames per window
    context: int  # frames of context before and after each window's middle part
    stride: int  # frames per output step of the model

    def __post_init__(self) -> None:
        if self.stride < 1 or self.window % self.stride or self.context % self.stride:
            raise ValueError(f"window {self.window} and context {self.context} frames must be multiples of the "
                             f"model's {self.stride} frames per step")
        if self.context < 0 or self.window - 2 * self.context < self.stride:
            raise ValueError(f"window {self.window} frames leaves no middle part after {self.context} frames of "
                             f"context on each side")

    @property
    def middle(self) -> int:
        return self.window - 2 * self.context

    def steps(self, frames: int) -> int:
        """Output steps of a video of ``frames`` frames, recognised whole or in windows."""
        return math.ceil(frames / self.stride)

    def windows(self, frames: int) -> list[Window]:
        if frames < 1:
            raise ValueError(f"a video of {frames} frames has no windows")
        if frames <= self.window:
            return [Window(0, frames, 0, self.steps(frames))]
        out = []
        for middle_start in range(0, frames, self.middle):
            middle_stop = min(middle_start + self.middle, frames)
            start, stop = max(0, middle_start - self.context), min(frames, middle_stop + self.context)
            first_step = start // self.stride
            out.append(Window(start, stop, middle_start // self.stride - first_step,
                              self.steps(middle_stop) - first_step))
        return out


def stitch(windows: Sequence[Window], log_probs: Sequence[np.ndarray], steps: Sequence[int]) -> np.ndarray:
    """The kept steps of each window's log-probabilities ((T_w, V), ``steps[w]`` of them valid), joined."""
    if not len(windows) == len(log_probs) == len(steps):
        raise ValueError(f"{len(windows)} windows, {len(log_probs)} outputs and {len(steps)} step counts")
    kept = []
    for window, output, valid in zip(windows, log_probs, steps, strict=True):
        if valid < window.keep_stop:
            raise ValueError(f"the window of frames {window.start}-{window.stop} gave {valid} steps, "
                             f"{window.keep_stop} expected")
        kept.append(output[window.keep_start:window.keep_stop])
    return np.concatenate(kept)
