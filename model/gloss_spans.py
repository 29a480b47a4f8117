"""Where each decoded gloss lies in its video, in seconds, from the output steps the decoder gives it.

One output step of the temporal CNN covers ``frames_per_step`` input frames: step s is centred on frames
s * frames_per_step ... (s + 1) * frames_per_step - 1 (the replicate padding puts the receptive field's
centre there). A gloss therefore runs from its first step's first frame to the end of its last step's
frames, clipped to the video's own frames (the last step may reach into the padding). The server, its
client and local recognition all use these functions, so their spans agree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Span = tuple[float, float]


def frame_rate(video_fps: float | None, default_fps: float | None) -> float:
    """The video's own frame rate where it states one, else the model's (its training videos'), else 0.0:
    unknown."""
    for fps in (video_fps, default_fps):
        if fps is not None and math.isfinite(fps) and fps > 0:
            return float(fps)
    return 0.0


def gloss_spans(starts: Sequence[int], ends: Sequence[int], frames_per_step: int, fps: float,
                frames: int) -> list[Span]:
    """(start, end) seconds of each gloss from its first and last output step; the video has ``frames`` frames
    at ``fps``. An unknown rate (fps 0) gives NaN spans rather than a guess."""
    if len(starts) != len(ends):
        raise ValueError(f"{len(starts)} start steps but {len(ends)} end steps")
    if frames_per_step < 1:
        raise ValueError(f"frames_per_step must be at least 1, got {frames_per_step}")
    if frames < 0:
        raise ValueError(f"a video cannot have {frames} frames")
    problems = [(s, e) for s, e in zip(starts, ends, strict=True) if not 0 <= s <= e]
    if problems:
        raise ValueError(f"each gloss needs 0 <= start step <= end step, got {problems[0]}")
    if not fps > 0:
        return [(math.nan, math.nan)] * len(starts)
    duration = frames / fps
    return [(min(start * frames_per_step / fps, duration), min((end + 1) * frames_per_step / fps, duration))
            for start, end in zip(starts, ends, strict=True)]
