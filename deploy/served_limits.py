"""The served limits, defined once: how many frames one clip and how many clips one batch may hold, and how
long a whole video recognised in windows (deploy/serving/buffered.py) may last.

Every model of a repository follows them. `preprocess` and the python `visual` model refuse a longer clip,
and pad a shorter one with blank frames up to the minimum (its length still counts only its own frames, so
the answer is unchanged); the client pads raw frames the same way; a TensorRT engine is accepted only if its
optimisation profile covers them. The minimum exists for TensorRT: an engine's profile has a smallest frame
count, and a profile reaching down to a single frame would be tuned for shapes no real video has.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# A video stating no frame rate is timed at the rate of the corpora QSLR is trained on (Phoenix, CSL-Daily).
RATE_WHEN_UNKNOWN = 25.0


class ClipTooLongError(ValueError):
    """A clip has more frames than the served maximum."""


@dataclass(frozen=True)
class ServedLimits:
    min_frames: int = 16
    max_frames: int = 400
    max_batch: int = 16
    max_seconds: float = 600.0  # a whole video, recognised in windows of at most max_frames frames

    def __post_init__(self) -> None:
        if not 1 <= self.min_frames <= self.max_frames:
            raise ValueError(f"served limits: need 1 <= min_frames <= max_frames, got {self.min_frames} and "
                             f"{self.max_frames}")
        if self.max_batch < 1:
            raise ValueError(f"served limits: max_batch must be at least 1, got {self.max_batch}")
        if not self.max_seconds > 0:
            raise ValueError(f"served limits: max_seconds must be positive, got {self.max_seconds}")

    def batch_bytes(self, height: int, width: int) -> int:
        """Bytes of the largest batch of frames a model of the repository exchanges: uint8 (B, T, H, W, 3)."""
        return self.max_batch * self.max_frames * height * width * 3

    def shared_memory_bytes(self, height: int, width: int, instances: int = 1) -> int:
        """Shared memory (/dev/shm, Docker's --shm-size) a server needs for full batches.

        Python-backend models exchange tensors with the server through shared memory, each instance in a
        region of its own that grows to the largest tensor it has held: a full batch of frames sits in the
        region of a `preprocess` instance (its output) and in that of a python `visual` instance (its input),
        so two per instance pair, plus room for the small tensors (lengths, log-probabilities, results).
        """
        return 2 * instances * self.batch_bytes(height, width) + 256 * 2**20

    def too_long(self, frames: int) -> str | None:
        """The error for a clip of ``frames`` frames, or None when it may be served."""
        if frames > self.max_frames:
            return f"video too long: {frames} frames, the served maximum is {self.max_frames}"
        return None

    def check_length(self, frames: int) -> None:
        problem = self.too_long(frames)
        if problem:
            raise ClipTooLongError(problem)

    def check_duration(self, frames: int, fps: float) -> None:
        """Refuse a whole video lasting longer than ``max_seconds`` (``frames`` at ``fps``; 0: unknown)."""
        rate = fps or RATE_WHEN_UNKNOWN
        seconds = frames / rate
        if seconds > self.max_seconds:
            raise ClipTooLongError(f"video too long: it lasts {minutes(seconds)} ({frames} frames at {rate:g} fps"
                                   f"{'' if fps else ', assumed'}), the served maximum is {minutes(self.max_seconds)}")


def minutes(seconds: float) -> str:
    """600.0 -> '10:00.0' (minutes and seconds)."""
    whole, rest = divmod(seconds, 60)
    return f"{int(whole)}:{rest:04.1f}"


def pad_to_minimum(frames: np.ndarray, minimum: int) -> np.ndarray:
    """(T, H, W, 3) -> (max(T, minimum), H, W, 3), the added frames blank; the caller keeps the true length."""
    if len(frames) >= minimum:
        return frames
    padded = np.zeros((minimum, *frames.shape[1:]), dtype=frames.dtype)
    padded[: len(frames)] = frames
    return padded
