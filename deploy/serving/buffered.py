"""Buffered recognition of long videos, as speech recognisers run CTC models over long audio: the frames are cut
into windows that overlap by some context on each side, the visual model runs on the windows (as one batch, the
served signature unchanged), each window keeps only the output steps of its middle part, and the kept steps,
joined, are decoded as the whole video's: in segments, each once (model/streaming_decoding.py), as a live stream
of the same frames is (deploy/serving/streaming.py).

The served model gives one output step per ``stride`` frames, step j of a clip standing for its frames
``stride * j`` to ``stride * j + stride - 1`` (the temporal padding is laid out so). So a window starting at a
multiple of the stride has its steps on the video's own step grid, and the kept steps of consecutive windows
join without a gap or an overlap into exactly the steps the whole video would have. A video no longer than one
window is one window: the path, and the log-probabilities, of recognising it whole.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qslr.deploy.served_limits import ServedLimits
from qslr.deploy.served_video import placed
from qslr.deploy.serving.ragged_batch import pad_clips
from qslr.model.decoding_defaults import LIVE_CONTEXT_FRAMES, LIVE_WINDOW_FRAMES
from qslr.pipelines.framing import FramedReader, FrameTarget, FramingOptions, FramingRecord
from qslr.pipelines.video_io import VideoProbe, probe_video
from qslr.train.config import DecodeConfig

# uint8 frames (B, T, H, W, 3) and their counts (B,) -> log-probabilities (B, T', V) and valid steps (B,)
VisualRunner = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


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

    @classmethod
    def for_model(cls, decode: Mapping, stride: int, window: int | None = None, context: int | None = None
                  ) -> WindowPlan:
        """The window and context asked for, else a training config's decode section's, else the defaults."""
        # Checkpoints written before these settings existed take today's defaults.
        default = DecodeConfig()
        return cls(window or int(decode.get("window_frames", default.window_frames)),
                   int(decode.get("context_frames", default.context_frames)) if context is None else context, stride)

    @classmethod
    def for_live(cls, decode: Mapping, stride: int, window: int | None = None, context: int | None = None
                 ) -> WindowPlan:
        """A live stream's windows: those asked for, else the decode section's live ones, else the defaults
        (shorter than a video's: how long a gloss waits to be final follows the middle part and the context)."""
        return cls(window or int(decode.get("live_window_frames", LIVE_WINDOW_FRAMES)),
                   int(decode.get("live_context_frames", LIVE_CONTEXT_FRAMES)) if context is None else context, stride)

    def check_fits(self, max_frames: int) -> None:
        """Refuse windows longer than the clips the visual model takes (the served maximum)."""
        if self.window > max_frames:
            raise ValueError(f"a window of {self.window} frames is more than the served maximum of {max_frames} "
                             f"frames a clip")

    @property
    def middle(self) -> int:
        return self.window - 2 * self.context

    def steps(self, frames: int) -> int:
        """Output steps of a video of ``frames`` frames, recognised whole or in windows."""
        return math.ceil(frames / self.stride)

    def window_at(self, index: int, frames: int | None = None) -> Window:
        """Window ``index`` of a video of ``frames`` frames (None: of a video that goes on past it)."""
        middle_start = index * self.middle
        middle_stop = middle_start + self.middle
        start, stop = max(0, middle_start - self.context), middle_stop + self.context
        if frames is not None:
            middle_stop, stop = min(middle_stop, frames), min(stop, frames)
        first_step = start // self.stride
        return Window(start, stop, middle_start // self.stride - first_step, self.steps(middle_stop) - first_step)

    def windows(self, frames: int) -> list[Window]:
        if frames < 1:
            raise ValueError(f"a video of {frames} frames has no windows")
        if frames <= self.window:
            return [Window(0, frames, 0, self.steps(frames))]
        return [self.window_at(index, frames) for index in range(math.ceil(frames / self.middle))]


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


@dataclass(frozen=True)
class BufferedOutput:
    log_probs: np.ndarray  # (T', V), the first ``steps`` valid: the whole video's output steps
    steps: int
    frames: int
    windows: int  # 1: the video was recognised whole


def run_buffered(chunks: Iterable[np.ndarray], plan: WindowPlan, run: VisualRunner, batch: int = 4,
                 min_frames: int = 16) -> BufferedOutput:
    """A video's log-probabilities from its frames, given as chunks (n, H, W, 3) in order.

    A video of at most ``plan.window`` frames runs whole, as one clip. A longer one runs as windows, ``batch``
    of them to a call of ``run``; a window is cut as soon as its last frame has arrived, and the frames before
    the next window's first are let go. So what is held is at most a batch of windows and one chunk, however
    long the video: only the output steps, a few numbers per frame, grow with it.
    """
    held: np.ndarray | None = None
    held_start = total = cut = 0  # held_start: the video frame held[0] is; cut: windows cut so far
    pending: list[tuple[Window, np.ndarray]] = []
    kept: list[np.ndarray] = []

    def run_pending() -> None:
        frames, lengths = pad_clips([clip for _, clip in pending], min_frames)
        log_probs, steps = run(frames, lengths)
        kept.append(stitch([window for window, _ in pending], list(log_probs), steps.tolist()))
        pending.clear()

    def cut_window(window: Window) -> None:
        nonlocal cut
        pending.append((window, held[window.start - held_start:window.stop - held_start]))
        cut += 1
        if len(pending) == batch:
            run_pending()

    for chunk in chunks:
        held = chunk if held is None else np.concatenate([held, chunk])
        total += len(chunk)
        if total <= plan.window:  # perhaps a short video, recognised whole
            continue
        while (window := plan.window_at(cut)).stop <= total:
            cut_window(window)
            next_start = plan.window_at(cut).start
            held, held_start = held[next_start - held_start:], next_start
    if held is None or not total:
        raise ValueError("a video without frames has no output steps")
    if total <= plan.window:
        log_probs, steps = run(*pad_clips([held], min_frames))
        return BufferedOutput(log_probs[0], int(steps[0]), total, 1)
    windows = plan.windows(total)
    for window in windows[cut:]:
        cut_window(window)
    if pending:
        run_pending()
    log_probs = np.concatenate(kept)
    if len(log_probs) != plan.steps(total):
        raise RuntimeError(f"{len(windows)} windows gave {len(log_probs)} steps for {total} frames, "
                           f"{plan.steps(total)} expected")
    return BufferedOutput(log_probs, len(log_probs), total, len(windows))


def video_log_probs(video: bytes | str | Path, target: FrameTarget, limits: ServedLimits, plan: WindowPlan,
                    run: VisualRunner, window_batch: int, options: FramingOptions | None = None,
                    probe: VideoProbe | None = None) -> tuple[BufferedOutput, FramingRecord]:
    """An uploaded or local video's log-probabilities, whole or in windows, and what was done to its frames (whose
    rate, ``record.fps``, places the glosses in it).

    The container is read without decoding first (unless ``probe`` is that reading), so that a truncated video,
    or one longer than ``limits.max_seconds`` (timed at the model's rate, or the video's where the model states
    none), is refused before any work. The frames are then decoded and framed (pipelines/framing.py) a chunk at a
    time into the windows."""
    probe = probe or probe_video(video)
    if target.fps:
        limits.check_duration(placed(probe, target), target.fps)
    else:
        limits.check_duration(probe.packets, probe.fps)
    reader = FramedReader(video, target, options or FramingOptions())
    output = run_buffered(reader.chunks(), plan, run, window_batch, limits.min_frames)
    return output, reader.record
