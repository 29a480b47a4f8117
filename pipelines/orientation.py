"""A video's display matrix -> the quarter turn and mirror that show its frames upright.

Phones store a portrait video as landscape frames and say in the container how to show them (an MP4 `tkhd`
matrix, a Matroska/WebM projection): FFmpeg hands it on with every decoded frame as DISPLAYMATRIX side data,
nine int32 in 16.16 fixed point, mapping a source pixel (x, y, 1) to (x', y', w') by (x, y, 1) * M. Its 2x2 part
(a = m[0], b = m[1], c = m[3], d = m[4]) places the frame: x' = a x + c y, y' = b x + d y. For a picture stored as
an (H, W, 3) array, b = c = 0 keeps the axes (a < 0 mirrors the columns, d < 0 the rows); a = d = 0 swaps them
(a transpose), then c < 0 mirrors the new columns and b < 0 the new rows. So 90 degrees counter-clockwise
(a = 0, b = -1, c = 1, d = 0) is np.rot90(frame, k=1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_FIXED_POINT = 1 << 16


class UnsupportedOrientationError(ValueError):
    """A display matrix that turns the picture by other than a quarter turn (or skews it)."""


@dataclass(frozen=True)
class Orientation:
    """How frames stored as they were encoded are shown upright: a transpose, then mirrored rows and columns."""

    transpose: bool = False
    flip_rows: bool = False  # upside down, after the transpose
    flip_columns: bool = False  # left to right, after the transpose

    @classmethod
    def from_display_matrix(cls, matrix: Sequence[int] | None, name: str = "video") -> Orientation:
        """From the nine int32 of FFmpeg's display matrix (None or all zero: upright as stored)."""
        if matrix is None or not any(matrix):
            return cls()
        if len(matrix) != 9:
            raise UnsupportedOrientationError(f"{name}: a display matrix has 9 entries, this one {len(matrix)}")
        a, b, c, d = (matrix[i] / _FIXED_POINT for i in (0, 1, 3, 4))
        if abs(a) < 1e-3 and abs(d) < 1e-3 and abs(b) > 1e-3 and abs(c) > 1e-3:
            return cls(True, b < 0, c < 0)
        if abs(b) < 1e-3 and abs(c) < 1e-3 and abs(a) > 1e-3 and abs(d) > 1e-3:
            return cls(False, d < 0, a < 0)
        degrees = math.degrees(math.atan2(b, a))
        raise UnsupportedOrientationError(f"{name}: its display matrix ({a:.3g}, {b:.3g}; {c:.3g}, {d:.3g}) turns "
                                          f"the picture by {degrees:.0f} degrees or skews it; only quarter turns "
                                          f"and mirrors are shown upright")

    @property
    def upright(self) -> bool:
        return not (self.transpose or self.flip_rows or self.flip_columns)

    @property
    def mirrored(self) -> bool:
        """Whether showing the frames upright mirrors them (a determinant of -1): a selfie camera's mirror."""
        return self.transpose != (self.flip_rows != self.flip_columns)

    @property
    def rotation(self) -> int:
        """Degrees counter-clockwise in 0, 90, 180, 270 (the turn left after any mirror is taken as one of the
        columns), as FFmpeg's av_display_rotation_get tells them modulo 360."""
        rows, columns = self.flip_rows, self.flip_columns
        if self.mirrored:
            columns = not columns
        if self.transpose:
            return 90 if rows else 270
        return 180 if rows else 0

    def size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) of the upright picture of a stored (height, width) one."""
        return (width, height) if self.transpose else (height, width)

    def apply(self, frames):
        """Stored frames (T, H, W, 3), a numpy array or a PyTorch tensor (where DALI decoded them, on a GPU too)
        -> upright ones; the same array where nothing moves, a copy otherwise."""
        if self.upright:
            return frames
        flips = [axis for axis, flip in ((1, self.flip_rows), (2, self.flip_columns)) if flip]
        if not isinstance(frames, np.ndarray):
            frames = frames.permute(0, 2, 1, 3) if self.transpose else frames
            return frames.flip(flips).contiguous() if flips else frames.contiguous()
        frames = frames.transpose(0, 2, 1, 3) if self.transpose else frames
        return np.ascontiguousarray(np.flip(frames, flips) if flips else frames)


def display_matrix(frame) -> tuple[int, ...] | None:
    """The DISPLAYMATRIX side data of a decoded PyAV frame, or None where it carries none."""
    from av.sidedata.sidedata import Type

    data = frame.side_data.get(Type.DISPLAYMATRIX)
    return None if data is None else tuple(int(v) for v in np.frombuffer(bytes(data), dtype=np.int32))
