"""Gathering requests of different lengths into one batch and splitting the results back per request."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pad_clips(clips: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Clips (T_i, H, W, 3) -> (B, max T, H, W, 3) zero-padded, and lengths (B,) int64."""
    lengths = np.array([len(c) for c in clips], dtype=np.int64)
    batch = np.zeros((len(clips), int(lengths.max()), *clips[0].shape[1:]), dtype=clips[0].dtype)
    for row, clip in enumerate(clips):
        batch[row, : len(clip)] = clip
    return batch, lengths


def split_steps(values: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
    """(B, T', ...) -> one (T'_i, ...) array per sample, cut to its own length."""
    return [values[row, : int(n)] for row, n in enumerate(lengths)]


def check_clip(frames: np.ndarray, length: int, height: int, width: int, max_frames: int) -> str | None:
    """Why a request's frames cannot be served, or None."""
    if frames.ndim != 4 or frames.shape[1:] != (height, width, 3):
        return f"frames must have shape [T, {height}, {width}, 3], got {list(frames.shape)}"
    if len(frames) == 0 or length < 1:
        return "the video is empty"
    if length > len(frames):
        return f"lengths says {length} frames but only {len(frames)} were sent"
    if length > max_frames:
        return f"a video of {length} frames exceeds the configured maximum of {max_frames}"
    return None
