"""What `qslr recognise --live` reads: a camera (PyAV's v4l2 input, /dev/videoN) or a video stream on stdin or a
pipe, decoded a frame at a time, each with its capture time (its timestamp), by a reader thread.

Between the reader and the recogniser is a queue of at most `capacity` frames. A camera cannot wait: a frame that
finds the queue full (the recogniser has fallen behind) is dropped and counted, and placement by capture time
repeats the frame before it in its place. A pipe or a file can: the reader waits, so the sender is slowed (a pipe
whose buffer fills blocks its writer) and no frame is lost. Either way what is held is bounded.
"""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from qslr.pipelines.video_io import VideoReader

CAMERAS = "/dev/video"  # a source path starting so is a camera, read with FFmpeg's v4l2 input
CAPACITY = 50  # frames: 2 s of a 25-fps camera


@dataclass(frozen=True)
class Captured:
    frames: np.ndarray  # (n, H, W, 3) uint8, as stored
    starts: np.ndarray  # capture times, seconds
    matrix: tuple[int, ...] | None  # the display matrix (None: shown as stored)
    fps: float  # the rate the source states (0.0: none)


_END = object()


class LiveSource:
    """``frames()`` yields what was captured, in order, until the source ends (``end`` is then where its last
    frame ends); an error of the reader is raised there."""

    def __init__(self, source: str, capacity: int = CAPACITY, camera: bool | None = None):
        """``camera``: whether the source cannot wait (default: a /dev/videoN path)."""
        if capacity < 1:
            raise ValueError(f"the frame queue must hold at least one frame, got {capacity}")
        self.source = source
        self.camera = source.startswith(CAMERAS) if camera is None else camera
        self.name = "<stdin>" if source == "-" else source
        self.dropped = 0
        self.end: float | None = None
        self._queue: queue.Queue = queue.Queue(capacity)

    def _read(self) -> None:
        try:
            stream = sys.stdin.buffer if self.source == "-" else self.source
            with VideoReader(stream, "v4l2" if self.source.startswith(CAMERAS) else None) as reader:
                for frames, starts in reader.timed_chunks(1):
                    self._put(Captured(frames, starts, reader.display_matrix, reader.fps))
                self.end = reader.end
            self._queue.put(_END)
        except BaseException as exc:  # noqa: BLE001 - whatever stopped the reader is raised where frames are taken
            self._queue.put(exc)

    def _put(self, captured: Captured) -> None:
        if not self.camera:
            self._queue.put(captured)
            return
        try:
            self._queue.put_nowait(captured)
        except queue.Full:
            self.dropped += len(captured.frames)

    def frames(self) -> Iterator[Captured]:
        threading.Thread(target=self._read, name="live-source", daemon=True).start()
        while (item := self._queue.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item
