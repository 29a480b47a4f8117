"""Gathering requests of different lengths into one batch and splitting the results back per request."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from qslr.deploy.served_limits import ServedLimits


def pad_clips(clips: Sequence[np.ndarray], min_frames: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Clips (T_i, H, W, 3) -> (B, max(max T, min_frames), H, W, 3) zero-padded, and lengths (B,) int64."""
    lengths = np.array([len(c) for c in clips], dtype=np.int64)
    time = max(int(lengths.max()), min_frames)
    batch = np.zeros((len(clips), time, *clips[0].shape[1:]), dtype=clips[0].dtype)
    for row, clip in enumerate(clips):
        batch[row, : len(clip)] = clip
    return batch, lengths


def length_groups(lengths: Sequence[int], max_padding: float = 0.1) -> list[list[int]]:
    """Indices of clips grouped so that padding each group to its longest clip adds at most ``max_padding``
    of its real frames: clips sorted by length, cut wherever the next would pad the group beyond that.

    A CPU pays for padded frames as for real ones, and a batched call saves little per clip, so a dynamic
    batch of mixed lengths is run as a few calls over similar lengths rather than one padded to the longest.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: list[list[int]] = []
    for index in order:
        if groups:
            group = groups[-1]
            real = sum(lengths[i] for i in group) + lengths[index]
            if lengths[index] * (len(group) + 1) - real <= max_padding * real:
                group.append(index)
                continue
        groups.append([index])
    return groups


def split_steps(values: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
    """(B, T', ...) -> one (T'_i, ...) array per sample, cut to its own length."""
    return [values[row, : int(n)] for row, n in enumerate(lengths)]


def check_clip(frames: np.ndarray, length: int, height: int, width: int, limits: ServedLimits) -> str | None:
    """Why a request's frames cannot be served, or None."""
    if frames.ndim != 4 or frames.shape[1:] != (height, width, 3):
        return f"frames must have shape [T, {height}, {width}, 3], got {list(frames.shape)}"
    if len(frames) == 0 or length < 1:
        return "the video is empty"
    if length > len(frames):
        return f"lengths says {length} frames but only {len(frames)} were sent"
    return limits.too_long(length)
