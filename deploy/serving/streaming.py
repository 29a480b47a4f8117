"""Live recognition: frames as a camera gives them (already placed on the model's frame rate), recognised window by
window while they arrive, with the buffered recognition's windows (deploy/serving/buffered.py).

A window runs as soon as its frames and its right context are in. The steps it keeps are final: they go to a
streaming decoder (model/streaming_decoding.py), which commits the glosses before each pause, so a final gloss
never changes. The newest window's steps beyond those it keeps (its right context) are tentative: decoded after
the open segment, they give the glosses that may still change. Until the stream is longer than one window it may
still be a clip, recognised whole as a clip is; the frames so far then run as one, every `middle` frames, and all
their glosses are tentative.

When the stream ends, the windows left run as buffered recognition runs them (one at a time) and the open segment
is decoded: the answer is the buffered recognition of the same frames with the same windows, bit for bit. What is
held is at most a window of frames and one chunk, and the decoder's open segment, however long the stream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from qslr.deploy.serving.buffered import VisualRunner, WindowPlan
from qslr.deploy.serving.ragged_batch import pad_clips
from qslr.deploy.serving.recognition import Recognition
from qslr.deploy.serving.served_decoding import DecodeOptions, ServedDecoder
from qslr.model.gloss_spans import gloss_spans
from qslr.model.streaming_decoding import DecodedGloss


@dataclass(frozen=True)
class LiveGloss:
    index: int  # its place among the stream's glosses: a final one keeps it, a tentative one would take it
    gloss: str
    start_s: float  # in the stream's seconds from its first frame (NaN where no frame rate is known)
    end_s: float
    start_step: int
    end_step: int

    def to_dict(self) -> dict:
        return {"index": self.index, "gloss": self.gloss, "start": _seconds(self.start_s),
                "end": _seconds(self.end_s)}


def _seconds(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 3)


@dataclass(frozen=True)
class LiveUpdate:
    final: tuple[LiveGloss, ...]  # glosses that became final with this update (or, a repeat merged, whose end moved)
    tentative: tuple[LiveGloss, ...]  # what follows the final glosses for now; replaces the previous update's
    frames: int  # frames received
    final_frames: int  # frames whose output steps are final
    windows: int  # windows run so far

    def to_dict(self) -> dict:
        return {"final": [g.to_dict() for g in self.final], "tentative": [g.to_dict() for g in self.tentative],
                "frames": self.frames, "final_frames": self.final_frames, "windows": self.windows}


class StreamingRecogniser:
    """One stream: ``push`` its frames (n, H, W, 3) at the model's size and rate, in order, and take the updates;
    ``finish`` ends it with the answer. ``run`` is given one window a call."""

    def __init__(self, plan: WindowPlan, run: VisualRunner, decoder: ServedDecoder, options: DecodeOptions,
                 fps: float | None, min_frames: int = 1):
        self.plan, self.run, self.served, self.options = plan, run, decoder, options
        self.fps = decoder.fps(fps)
        self.min_frames = min_frames
        self.decoder = decoder.streaming(options)
        self.frames = 0
        self.windows = 0  # windows run
        self._held: list[np.ndarray] = []  # frames from ``_held_start`` on, in chunks
        self._held_start = 0
        self._whole_runs = 0  # runs of the frames so far as a clip, while the stream may still be one

    def push(self, frames: np.ndarray) -> list[LiveUpdate]:
        """The next frames; an update for each window they complete (or, while the stream may still be a clip,
        for each ``middle`` frames)."""
        if not len(frames):
            return []
        self._held.append(frames)
        self.frames += len(frames)
        if self.frames <= self.plan.window:
            if self.frames // self.plan.middle > self._whole_runs:
                self._whole_runs = self.frames // self.plan.middle
                return [self._whole_update()]
            return []
        updates = []
        while (window := self.plan.window_at(self.windows)).stop <= self.frames:
            updates.append(self._run_window(window, final=True))
        return updates

    def _frames(self, start: int, stop: int) -> np.ndarray:
        if len(self._held) > 1:
            self._held = [np.concatenate(self._held)]
        return self._held[0][start - self._held_start:stop - self._held_start]

    def _whole_update(self) -> LiveUpdate:
        log_probs, steps = self.run(*pad_clips([self._frames(0, self.frames)], self.min_frames))
        return self._update(0, self.decoder.tentative(log_probs[0][:int(steps[0])]))

    def _run_window(self, window, final: bool) -> LiveUpdate | None:
        """Run one window and push its kept steps; ``final``: the stream goes on, and the update is wanted."""
        log_probs, steps = self.run(*pad_clips([self._frames(window.start, window.stop)], self.min_frames))
        self.windows += 1
        valid = int(steps[0])
        if valid < window.keep_stop:
            raise RuntimeError(f"the window of frames {window.start}-{window.stop} gave {valid} steps, "
                               f"{window.keep_stop} expected")
        before = len(self.decoder.final)
        changed = self.decoder.push(log_probs[0][window.keep_start:window.keep_stop])
        next_start = self.plan.window_at(self.windows).start
        held = self._frames(next_start, self.frames) if next_start < self.frames else None
        self._held, self._held_start = ([held] if held is not None else []), next_start
        if not final:
            return None
        tentative = self.decoder.tentative(log_probs[0][window.keep_stop:valid])
        return self._update(min(changed, before), tentative)

    def _update(self, changed: int, tentative: list[DecodedGloss]) -> LiveUpdate:
        final = self.decoder.final
        return LiveUpdate(self._placed(final[changed:], changed), self._placed(tentative, len(final)), self.frames,
                          min(self.frames, self.decoder.steps * self.plan.stride), self.windows)

    def _placed(self, glosses: list[DecodedGloss], first_index: int) -> tuple[LiveGloss, ...]:
        spans = gloss_spans([g.start for g in glosses], [g.end for g in glosses], self.plan.stride, self.fps,
                            self.frames)
        return tuple(LiveGloss(first_index + i, g.gloss, start, end, g.start, g.end)
                     for i, (g, (start, end)) in enumerate(zip(glosses, spans, strict=True)))

    def finish(self) -> Recognition:
        """End the stream: the windows left run, and the answer is the buffered recognition of its frames."""
        if not self.frames:
            raise ValueError("a stream without frames has no glosses")
        if self.frames <= self.plan.window:  # a clip, decoded whole (by this stream's own beam)
            log_probs, steps = self.run(*pad_clips([self._frames(0, self.frames)], self.min_frames))
            (alternatives,) = self.decoder.decoder.decode_alternatives(log_probs[:1], steps[:1], self.options.top_k)
            return self.served.recognition(alternatives, self.frames, self.fps)
        for window in self.plan.windows(self.frames)[self.windows:]:
            self._run_window(window, final=False)
        if self.decoder.steps != self.plan.steps(self.frames):
            raise RuntimeError(f"{self.windows} windows gave {self.decoder.steps} steps for {self.frames} frames, "
                               f"{self.plan.steps(self.frames)} expected")
        return self.served.recognition(self.decoder.finish(), self.frames, self.fps)
