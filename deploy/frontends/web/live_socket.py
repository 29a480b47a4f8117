"""The page's live mode: one WebSocket per stream, the webcam's frames in, the glosses out as they come.

The page opens the socket and sends `{"beam_size": ..., "framing": ...}`; the answer is `ready`, with the frame size
and aspect the model takes (the page sends its frames scaled to cover them, not at the camera's full size) and how
many frames it may have in flight. Each frame is then a binary message: its capture time in seconds (float64,
little-endian) followed by the picture (JPEG, PNG or WebP). The server answers each window with an `update` (the
glosses that became final, the tentative ones after them, each with its index and span) and tells the frames it has
taken (`taken`); `{"stop": true}` ends the stream, and the `answer` is the buffered recognition of the frames it
received (deploy/frontends/live.py).

Flow control: the page keeps at most `in_flight` frames unanswered (it skips camera frames meanwhile: a slow server
slows the sender); whatever it sends beyond the `QUEUE_FRAMES` that wait for the recogniser is dropped and counted,
so a sender that ignores the rule cannot grow the server's memory. A frame that cannot be read, or of another size
than the stream's, is refused alone (`refused`, and counted). A connection that drops ends its stream and frees
what it held; each stream has its own recogniser, so streams at once never mix.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import struct
from dataclasses import dataclass

import numpy as np
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocket, WebSocketDisconnect

from qslr.deploy.frontends.live import LiveModel, LiveStream
from qslr.deploy.serving.recognition import Recognition
from qslr.pipelines.framing import FramingError
from qslr.pipelines.framing_options import FramingOptions

log = logging.getLogger(__name__)

QUEUE_FRAMES = 32  # frames waiting for the recogniser, per stream: a frame beyond them is dropped
IN_FLIGHT = 12  # frames the page may send before the server has taken them
MAX_FRAME_BYTES = 2**20
MAX_FRAME_PIXELS = 1920 * 1920
_TIME = struct.Struct("<d")
_STOP = object()


class _Refused(ValueError):
    """A frame refused alone; the message says why."""


@dataclass
class _Counts:
    received: int = 0  # frames that reached the server
    dropped: int = 0  # of them, those that found the queue full
    refused: int = 0  # of them, those that could not be read or framed
    taken: int = 0  # of them, those the recogniser took

    def to_dict(self) -> dict:
        return {"received": self.received, "dropped": self.dropped, "refused": self.refused, "taken": self.taken}


def _picture(data: bytes, index: int) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_FRAME_PIXELS:
                raise _Refused(f"frame {index}: {image.width}x{image.height} is larger than the "
                               f"{MAX_FRAME_PIXELS} pixels a live frame may have")
            return np.asarray(image.convert("RGB"))
    except (OSError, Image.DecompressionBombError, ValueError) as exc:
        if isinstance(exc, _Refused):
            raise
        raise _Refused(f"frame {index}: not a picture ({exc})") from None


def _start_options(model: LiveModel, message: dict) -> tuple[object, FramingOptions]:
    """The start message's decoding and framing choices (ValueError names what is wrong)."""
    if not isinstance(message, dict):
        raise ValueError("the first message must be a JSON object: {\"beam_size\": ..., \"framing\": ...}")
    beam = message.get("beam_size")
    options = model.decoder.options({} if beam is None else {"beam_size": beam})
    return options, FramingOptions(message.get("framing") or None)


def answer_of(result: Recognition, counts: _Counts, beam_size: int) -> dict:
    record = result.framing or {}
    frames, fps = record.get("frames_out", 0), record.get("model_fps") or record.get("source_fps") or 0.0
    return {"type": "answer",
            "glosses": [{"gloss": gloss, "start": round(start, 3), "end": round(end, 3)}
                        for gloss, start, end in result.spans],
            "score": result.score, "beam_size": beam_size, "frames": frames, "fps": fps,
            "duration": round(frames / fps, 3) if fps else 0.0, "framing": result.framing, **counts.to_dict()}


class _Session:
    def __init__(self, websocket: WebSocket, stream: LiveStream, beam_size: int):
        self.websocket, self.stream, self.beam_size = websocket, stream, beam_size
        self.queue: asyncio.Queue = asyncio.Queue(QUEUE_FRAMES)
        self.counts = _Counts()
        self.closed = False  # the connection went: a batch being fed stops at its next frame

    async def receive(self) -> None:
        """Frames into the queue until the page says stop (or goes)."""
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(message.get("code", 1000))
            data, text = message.get("bytes"), message.get("text")
            if data is not None:
                self._queue_frame(data)
            elif text is not None and json.loads(text or "{}").get("stop"):
                await self.queue.put(_STOP)
                return

    def _queue_frame(self, data: bytes) -> None:
        index = self.counts.received
        self.counts.received += 1
        if not _TIME.size < len(data) <= MAX_FRAME_BYTES:
            item = (index, _Refused(f"frame {index}: a frame is its capture time and a picture of at most "
                                    f"{MAX_FRAME_BYTES} bytes, got {len(data)} bytes"))
        else:
            item = (index, data)
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.counts.dropped += 1

    async def recognise(self) -> None:
        """Frames from the queue through the recogniser, up to 8 at a time, until stop; then the answer."""
        stopping = False
        while not stopping:
            batch, item = [], await self.queue.get()
            while True:
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
                if len(batch) == 8 or self.queue.empty():
                    break
                item = self.queue.get_nowait()
            if batch:
                updates, refusals = await run_in_threadpool(self._feed, batch)
                for refusal in refusals:
                    await self.send({"type": "refused", "error": refusal, **self.counts.to_dict()})
                for update in updates:
                    await self.send({"type": "update", **update.to_dict(), **self.counts.to_dict()})
                if not updates:
                    await self.send({"type": "taken", **self.counts.to_dict()})
        if not self.stream.started:
            await self.send({"type": "error", "error": "the stream ended before a frame could be read",
                             **self.counts.to_dict()})
            return
        result = await run_in_threadpool(self.stream.finish)
        await self.send(answer_of(result, self.counts, self.beam_size))

    def _feed(self, batch: list[tuple[int, bytes | _Refused]]) -> tuple[list, list[str]]:
        """On a worker thread: each frame read and fed; a frame refused alone."""
        updates, refusals = [], []
        for index, data in batch:
            if self.closed:
                break
            self.counts.taken += 1
            try:
                if isinstance(data, _Refused):
                    raise data
                (start,) = _TIME.unpack_from(data)
                updates += self.stream.feed(_picture(data[_TIME.size:], index)[None], [start])
            except (_Refused, FramingError) as exc:
                self.counts.refused += 1
                refusals.append(str(exc))
        return updates, refusals

    async def send(self, message: dict) -> None:
        await self.websocket.send_text(json.dumps(message))


async def live_socket(websocket: WebSocket, model: LiveModel) -> None:
    """One live stream, from the start message to the answer (or until the page goes)."""
    await websocket.accept()
    try:
        message = json.loads(await websocket.receive_text())
        options, framing = _start_options(model, message)
    except (ValueError, KeyError) as exc:  # bad JSON, a bad choice, a first message that is not text
        await websocket.send_text(json.dumps({"type": "error", "error": f"cannot start the stream: {exc}"}))
        await websocket.close(1003)
        return
    except WebSocketDisconnect:
        return
    target, plan = model.target, model.plan
    session = _Session(websocket, model.stream(options, framing, "live stream"), options.beam_size)
    await session.send({"type": "ready", "width": target.width, "height": target.height,
                        "aspect": target.source.aspect, "framing": framing.framing or target.source.default_framing,
                        "fps": target.fps, "window": plan.window, "context": plan.context,
                        "in_flight": IN_FLIGHT, "queue": QUEUE_FRAMES})
    receiving, recognising = asyncio.create_task(session.receive()), asyncio.create_task(session.recognise())
    try:
        done, _ = await asyncio.wait({receiving, recognising}, return_when=asyncio.FIRST_COMPLETED)
        if receiving in done:
            receiving.result()  # a dropped connection raises here
        await recognising
        receiving.cancel()
        await websocket.close()
    except WebSocketDisconnect:
        log.info("a live stream's connection dropped after %d frames", session.counts.received)
    except Exception as exc:  # noqa: BLE001 - the stream fails alone, whatever its recogniser raised
        log.warning("a live stream failed: %s", exc)
        with contextlib.suppress(Exception):
            await session.send({"type": "error", "error": " ".join(str(exc).split()), **session.counts.to_dict()})
            await websocket.close(1011)
    finally:
        session.closed = True
        for task in (receiving, recognising):
            task.cancel()
