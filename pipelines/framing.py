"""Decoded frames of any video -> the frames a model takes, made as its training frames were made.

A model sees signers as its training videos showed them: upright, at its frame rate, a picture of a certain
aspect (Phoenix's 210x260 camera picture, squashed to 256x256) at its frame size. A phone or webcam video is
brought there in this order: shown upright by its display matrix (pipelines/orientation.py); placed on the
model's frame rate by its timestamps (pipelines/frame_placement.py); cut to the signer region, if one is given;
centre-cropped to the training aspect (or letterboxed into it, padded with black); resized to the frame size.
Never squashed to a size of another aspect than training's. What was done is kept in a `FramingRecord`, which
every answer carries. A video already like the training videos (upright, at the model's rate, of its aspect and
size) comes out unchanged, bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, astuple, dataclass, field
from pathlib import Path

import numpy as np
import torch

from qslr.pipelines.frame_placement import FramePlacer, PlacementCounts
from qslr.pipelines.framing_options import FramingOptions, Region
from qslr.pipelines.orientation import Orientation, UnsupportedOrientationError
from qslr.pipelines.source_framing import CROP, LETTERBOX, SourceFraming
from qslr.pipelines.video_io import VideoReader, resize_frames

# Pixels decoded at a time at the source's size: a 1080p video streams two frames at a time, a 256x256 one 64.
CHUNK_PIXELS = 64 * 256 * 256


class FramingError(ValueError):
    """A video that cannot be framed as asked (a region outside its picture, a display matrix that is not a
    quarter turn); the message names the video."""


@dataclass(frozen=True)
class FrameTarget:
    """What a model takes: frames of height x width showing a picture of the source's aspect, at ``fps`` (None:
    the model states no rate, and frames keep the video's)."""

    height: int
    width: int
    fps: float | None
    source: SourceFraming


@dataclass(frozen=True)
class FramingRecord:
    """What was done to one video, in the terms a user can check against the video."""

    stored_size: tuple[int, int]  # (width, height) as the frames are stored
    upright_size: tuple[int, int]  # (width, height) as they are shown
    rotation: int  # degrees counter-clockwise that showed the frames upright
    mirrored: bool
    source_fps: float  # the container's stated rate (0.0: none)
    model_fps: float | None  # the rate the frames were placed on (None: they kept the video's)
    frames_in: int
    frames_out: int
    dropped: int  # frames no model time took (a faster video)
    repeated: int  # model frames repeating the one before (a slower video)
    framing: str  # crop or letterbox
    region: tuple[int, int, int, int] | None  # the signer region asked for, (x, y, width, height) upright
    box: tuple[int, int, int, int]  # the part of the upright picture the frames show
    padding: tuple[int, int, int, int]  # (left, top, right, bottom) black pixels of a letterbox, at the model size
    size: tuple[int, int]  # (width, height) at the model

    @property
    def fps(self) -> float:
        """The frames' rate as they come out: the model's, or the video's where they were not placed."""
        return self.model_fps or self.source_fps

    @property
    def unchanged(self) -> bool:
        return (not self.rotation and not self.mirrored and self.frames_in == self.frames_out and not self.dropped
                and self.box == (0, 0, *self.upright_size) and self.size == self.upright_size and not any(self.padding))

    def summary(self) -> str:
        """One line: rotation, frame rate, crop, size."""
        width, height = self.upright_size
        parts = []
        if self.rotation or self.mirrored:
            turned = f"rotated {self.rotation} degrees counter-clockwise" if self.rotation else ""
            parts.append(" and ".join(filter(None, [turned, "mirrored" if self.mirrored else ""])))
        if self.model_fps is None:
            parts.append(f"{self.frames_out} frames at the video's {self.source_fps:.4g} fps "
                         "(the model states no rate)")
        elif self.dropped or self.repeated or self.frames_in != self.frames_out:
            changes = [f"{count} {what}" for count, what in ((self.dropped, "dropped"), (self.repeated, "repeated"))
                       if count]
            # A live stream's frames state no rate: their capture times place them.
            rate = f"at {self.source_fps:.4g} fps" if self.source_fps else "timed as captured"
            parts.append(f"{self.frames_in} frames {rate} placed on {self.model_fps:.4g} fps: "
                         f"{self.frames_out} ({', '.join(changes)})")
        else:
            parts.append(f"{self.frames_out} frames at {self.model_fps:.4g} fps")
        x, y, box_width, box_height = self.box
        if self.box != (0, 0, width, height):
            where = f"the region {','.join(map(str, self.region))} as " if self.region else ""
            parts.append(f"{where}{box_width}x{box_height} at {x},{y} of the {width}x{height} picture")
        if any(self.padding):
            parts.append(f"letterboxed ({self.padding[0] + self.padding[2]}x{self.padding[1] + self.padding[3]} "
                         f"pixels of black)")
        if self.size != (box_width, box_height):
            parts.append(f"resized to {self.size[0]}x{self.size[1]}")
        return "; ".join(parts)

    def to_dict(self) -> dict:
        """As JSON holds it (pairs and boxes as lists), so that a local answer and a served one compare equal."""
        fields = {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}
        return {**fields, "summary": self.summary()}


def _within(box: tuple[float, float], length: int) -> tuple[int, int]:
    """(start, size) of a span moved, then cut, to lie within 0..length."""
    start, size = box
    size = min(length, max(1, round(size)))
    return min(max(0, round(start)), length - size), size


def crop_box(area: Region, aspect: float, width: int, height: int) -> Region:
    """The part of a width x height picture shown for ``area`` at ``aspect``: the area widened (or heightened)
    about its centre to the aspect, as far as the picture allows, then cut about its centre where it still is
    not. A whole picture of another aspect is so centre-cropped; a tight signer region gets the background beside
    it that training frames show."""
    x, y, w, h = area.x, area.y, area.width, area.height
    if w / h < aspect:
        x, w = _within((x + w / 2 - h * aspect / 2, h * aspect), width)
        y, h = _within((y + h / 2 - w / aspect / 2, min(h, w / aspect)), height)
    else:
        y, h = _within((y + h / 2 - w / aspect / 2, w / aspect), height)
        x, w = _within((x + w / 2 - h * aspect / 2, min(w, h * aspect)), width)
    return Region(x, y, w, h)


class VideoFramer:
    """One video's frames -> the target's, fed a chunk at a time with their start times: it holds one source
    frame (the latest, whose share of model times the next frame's start settles), whatever the video's length."""

    def __init__(self, target: FrameTarget, options: FramingOptions, matrix: Sequence[int] | None,
                 stored: tuple[int, int], source_fps: float, name: str = "video"):
        try:
            self.orientation = Orientation.from_display_matrix(matrix, name)
        except UnsupportedOrientationError as exc:
            raise FramingError(str(exc)) from None
        self.target, self.options, self.name = target, options, name
        self.stored, self.source_fps = stored, source_fps  # (height, width); the stated rate
        height, width = self.orientation.size(*stored)
        region = options.region
        if region is not None and (region.x + region.width > width or region.y + region.height > height):
            raise FramingError(f"{name}: the region {region} (x,y,width,height) reaches past the upright picture, "
                               f"{width}x{height}")
        self.framing = options.framing or target.source.default_framing
        area = region or Region(0, 0, width, height)
        self.box = area if self.framing == LETTERBOX else crop_box(area, target.source.aspect, width, height)
        self.content, self.padding = self._layout()
        self.placer = FramePlacer(target.fps)
        self._held: np.ndarray | None = None

    def _layout(self) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
        """(height, width) of the picture at the model size, and the bars (left, top, right, bottom) around it."""
        height, width = self.target.height, self.target.width
        if self.framing == CROP:
            return (height, width), (0, 0, 0, 0)
        # The model's frame shows a picture of the source aspect: a box of another aspect fills it one way.
        ratio = (self.box.width / self.box.height) / self.target.source.aspect
        inner = (height, min(width, max(1, round(width * ratio)))) if ratio < 1 else \
            (min(height, max(1, round(height / ratio))), width)
        left, top = (width - inner[1]) // 2, (height - inner[0]) // 2
        return inner, (left, top, width - inner[1] - left, height - inner[0] - top)

    def _spatial(self, frames) -> np.ndarray:
        """Stored frames (numpy, or a tensor where DALI decoded them) -> the model's, in host memory."""
        box = self.box
        upright = self.orientation.apply(frames)[:, box.y:box.y + box.height, box.x:box.x + box.width]
        picture = resize_frames(np.ascontiguousarray(upright) if isinstance(upright, np.ndarray) else upright,
                                *self.content)
        if not any(self.padding):
            return picture
        left, top = self.padding[:2]
        framed = np.zeros((len(frames), self.target.height, self.target.width, 3), np.uint8)
        framed[:, top:top + self.content[0], left:left + self.content[1]] = picture
        return framed

    def _repeated(self, frames, counts: np.ndarray) -> list[np.ndarray]:
        taken = np.flatnonzero(counts)
        if not len(taken):
            return []
        if len(taken) < len(frames):
            frames = frames[taken if isinstance(frames, np.ndarray) else torch.as_tensor(taken, device=frames.device)]
        return [np.repeat(self._spatial(frames), counts[taken], axis=0)]

    def feed(self, frames, starts: Sequence[float]) -> np.ndarray:
        """The next decoded frames (n, H, W, 3) as stored (numpy, or a tensor where DALI decoded them), with their
        start times -> the model frames settled, in host memory."""
        if len(frames) != len(starts):
            raise ValueError(f"{self.name}: {len(frames)} frames and {len(starts)} start times")
        if not len(frames):
            return self._empty()
        counts = self.placer.take(starts)
        out = []
        if self._held is not None:
            out += self._repeated(self._held[None], counts[:1])
            counts = counts[1:]
        out += self._repeated(frames[:-1], counts)
        self._held = frames[-1].copy() if isinstance(frames, np.ndarray) else frames[-1].clone()
        return np.concatenate(out) if out else self._empty()

    def finish(self, end: float | None) -> np.ndarray:
        """The last frame's model frames; ``end``: where the video's content ends (None: unknown)."""
        if self._held is None:
            return self._empty()
        out = self._repeated(self._held[None], np.array([self.placer.finish(end)]))
        self._held = None
        return np.concatenate(out) if out else self._empty()

    def _empty(self) -> np.ndarray:
        return np.zeros((0, self.target.height, self.target.width, 3), np.uint8)

    def record(self) -> FramingRecord:
        counts: PlacementCounts = self.placer.counts
        height, width = self.stored
        upright = self.orientation.size(height, width)
        box = self.box
        return FramingRecord((width, height), (upright[1], upright[0]), self.orientation.rotation,
                             self.orientation.mirrored, float(self.source_fps or 0.0), self.target.fps,
                             counts.frames_in, counts.frames_out, counts.dropped, counts.repeated, self.framing,
                             astuple(self.options.region) if self.options.region else None,
                             (box.x, box.y, box.width, box.height), self.padding,
                             (self.target.width, self.target.height))


def frame_decoded(frames, starts: Sequence[float], end: float | None, matrix: Sequence[int] | None,
                  source_fps: float, target: FrameTarget, options: FramingOptions | None = None,
                  name: str = "video") -> tuple[np.ndarray, FramingRecord]:
    """A whole video decoded elsewhere (DALI: a tensor, on a GPU too), as stored, with its frames' start times and
    display matrix."""
    framer = VideoFramer(target, options or FramingOptions(), matrix, tuple(frames.shape[1:3]), source_fps, name)
    parts = [framer.feed(frames, starts), framer.finish(end)]
    return np.concatenate(parts), framer.record()


@dataclass
class FramedReader:
    """A video file's frames at the target, decoded and framed a chunk at a time (`VideoReader`); ``record`` is set
    once the chunks are all given."""

    source: str | Path | bytes
    target: FrameTarget
    options: FramingOptions = field(default_factory=FramingOptions)
    record: FramingRecord | None = None

    def chunks(self) -> Iterator[np.ndarray]:
        with VideoReader(self.source) as reader:
            height, width = reader.size
            framer = None
            for frames, starts in reader.timed_chunks(max(1, CHUNK_PIXELS // (height * width))):
                if framer is None:
                    framer = VideoFramer(self.target, self.options, reader.display_matrix, frames.shape[1:3],
                                         reader.fps, reader.name)
                framed = framer.feed(frames, starts)
                if len(framed):
                    yield framed
            framed = framer.finish(reader.end)
            if len(framed):
                yield framed
            self.record = framer.record()


def read_framed(source: str | Path | bytes, target: FrameTarget, options: FramingOptions | None = None
                ) -> tuple[np.ndarray, FramingRecord]:
    """A whole video at the target, and what was done to it."""
    reader = FramedReader(source, target, options or FramingOptions())
    chunks = list(reader.chunks())
    frames = chunks[0] if len(chunks) == 1 else np.concatenate(chunks) if chunks else np.zeros(
        (0, target.height, target.width, 3), np.uint8)
    return frames, reader.record
