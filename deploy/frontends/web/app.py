"""The page's web application: the static page, one endpoint that sends an uploaded video to the recogniser, and
the live mode's WebSocket (deploy/frontends/web/live_socket.py).

The upload is the request body itself (not a multipart form), read into memory up to the size limit and
dropped once answered: nothing is written to disk, not even a spooled temporary file.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket

from qslr.deploy.frontends.live import LiveModel
from qslr.deploy.frontends.web.live_socket import live_socket
from qslr.deploy.frontends.web.timeline import read_timing
from qslr.deploy.serving.client import Recognition, RecognitionError
from qslr.deploy.serving.triton_parameters import without_ensemble_prefix
from qslr.pipelines.framing_options import FramingOptions, Region
from qslr.pipelines.package_data import package_folder

STATIC = package_folder("qslr.deploy.frontends.web") / "static"
# The page loads nothing but its own files, and shows the user's video from blob: URLs.
PAGE_HEADERS = {"Content-Security-Policy": "default-src 'self'; media-src 'self' blob:; img-src 'self' data:; "
                                           "object-src 'none'; base-uri 'none'; form-action 'none'",
                "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}
# Extension -> the media types browsers give such files (or none: they often leave the type empty).
VIDEO_TYPES = {".webm": ("video/webm",), ".mkv": ("video/x-matroska", "video/matroska"), ".mp4": ("video/mp4",),
               ".avi": ("video/x-msvideo", "video/avi", "video/msvideo"), ".mov": ("video/quicktime",)}
_UNSPECIFIED = ("", "application/octet-stream")
_DRAIN_FACTOR = 4  # how much of a refused upload is read to deliver the refusal, in upload limits


class Recogniser(Protocol):
    def recognise_bytes(self, data: bytes, beam_size: int | None = None, top_k: int | None = None,
                        framing: FramingOptions | None = None) -> Recognition: ...


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int = 50 * 2**20
    types: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(VIDEO_TYPES))

    def __post_init__(self) -> None:
        if self.max_bytes < 1:
            raise ValueError(f"the upload limit must be at least one byte, got {self.max_bytes}")

    @property
    def media_types(self) -> list[str]:
        return [m for types in self.types.values() for m in types]

    def type_problem(self, name: str, media_type: str) -> str | None:
        """Why an upload of this file name and Content-Type is refused, or None when it is a video we take."""
        extension = Path(name).suffix.lower()
        media_type = media_type.split(";")[0].strip().lower()
        accepted = ", ".join(e.lstrip(".").upper() for e in self.types)
        if extension and extension not in self.types:
            return f"{name}: only {accepted} videos are accepted, not {extension} files"
        if media_type not in _UNSPECIFIED and media_type not in self.media_types:
            return f"{name or 'the upload'}: only {accepted} videos are accepted, not {media_type}"
        if not extension and media_type in _UNSPECIFIED:
            return f"only {accepted} videos are accepted: name the file or give its Content-Type"
        return None

    def too_large(self) -> str:
        return f"the video is larger than the upload limit of {self.max_bytes / 2**20:.3g} MB"


class _Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _unreachable(error: RecognitionError) -> bool:
    """Whether the recogniser could not be reached at all, rather than refusing this video."""
    cause = error.__context__  # the client's own exception, kept though not shown
    status = str(getattr(cause, "status", lambda: "")() or "")
    return isinstance(cause, OSError) or status in ("StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED")


def readable(message: str) -> str:
    """Triton's error text without the status code and ensemble prefix it wraps around the model's message."""
    message = re.sub(r"^\[(?:\d+|StatusCode\.\w+)\]\s*", "", message.strip())
    return without_ensemble_prefix(message)


async def _body(request: Request, limits: UploadLimits) -> bytes:
    """The upload, or a 413 once it passes the limit. The rest of a refused upload is still read (and dropped), up
    to a bound: answering with the upload unread resets the connection, and the client sees a broken pipe instead
    of the refusal."""
    bound = _DRAIN_FACTOR * limits.max_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > bound:
        raise _Refused(413, limits.too_large())
    too_large = declared.isdigit() and int(declared) > limits.max_bytes
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        too_large = too_large or size > limits.max_bytes  # a body sent without its length, or longer than it said
        if too_large:
            chunks.clear()
            if size > bound:
                break
        else:
            chunks.append(chunk)
    if too_large:
        raise _Refused(413, limits.too_large())
    if not size:
        raise _Refused(400, "the upload is empty")
    return b"".join(chunks)


def _beam_size(text: str | None) -> int | None:
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        raise _Refused(400, f"beam_size must be an integer, got {text!r}") from None


def _framing(framing: str | None, region: str | None) -> FramingOptions:
    """The page's framing choice (crop, letterbox, or empty: the model's) and signer region ("x,y,w,h" or empty)."""
    try:
        return FramingOptions(framing or None, Region.parse(region) if region else None)
    except ValueError as exc:
        raise _Refused(400, str(exc)) from None


def create_app(recogniser: Callable[[], Recogniser], limits: UploadLimits = UploadLimits(),
               live: LiveModel | None = None) -> Starlette:
    """The page and its endpoints. ``recogniser`` makes a client (a CslrClient): each worker thread makes its own,
    as tritonclient's HTTP client must stay on the thread that made it. ``live``: what the page's live mode
    recognises webcam streams with (none: the page has no live mode)."""
    local = threading.local()

    def recognise(data: bytes, beam_size: int | None, framing: FramingOptions) -> dict:
        if not hasattr(local, "client"):
            local.client = recogniser()
        started = time.perf_counter()
        try:
            result = local.client.recognise_bytes(data, beam_size, framing=framing)
        except RecognitionError as exc:
            if _unreachable(exc):
                raise _Refused(502, f"the recognition server cannot be reached: {readable(str(exc))}") from None
            raise _Refused(422, readable(str(exc))) from None
        latency = time.perf_counter() - started
        try:
            timing = read_timing(data)
        except ValueError as exc:
            raise _Refused(422, f"the glosses cannot be placed in the video: {exc}") from None
        spans = list(zip(result.start_s, result.end_s, strict=True))
        if not all(math.isfinite(t) for span in spans for t in span):
            raise _Refused(502, "the server placed the glosses nowhere in time (neither the video nor the model "
                                "states a frame rate)")
        # The server's spans (the same `qslr recognise` and `qslr infer` give), kept within the video's own
        # timeline as its packets' timestamps draw it.
        return {"glosses": [{"gloss": gloss, "start": round(min(start, timing.duration), 3),
                             "end": round(min(max(start, end), timing.duration), 3)}
                            for gloss, (start, end) in zip(result.glosses, spans, strict=True)],
                "score": result.score, "latency_ms": round(latency * 1000, 1), "beam_size": beam_size,
                "frames": timing.frames, "fps": round(timing.fps, 3), "duration": round(timing.duration, 3),
                "framing": result.framing}

    async def page(request: Request) -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)

    async def settings(request: Request) -> JSONResponse:
        return JSONResponse({"max_upload_bytes": limits.max_bytes, "extensions": list(limits.types),
                             "media_types": limits.media_types, "live": live is not None})

    async def recognise_upload(request: Request) -> JSONResponse:
        name = request.query_params.get("name", "")
        try:
            # The body first, whatever the answer: see _body.
            data = await _body(request, limits)
            problem = limits.type_problem(name, request.headers.get("content-type", ""))
            if problem:
                raise _Refused(415, problem)
            beam_size = _beam_size(request.query_params.get("beam_size"))
            framing = _framing(request.query_params.get("framing"), request.query_params.get("region"))
            return JSONResponse(await run_in_threadpool(recognise, data, beam_size, framing))
        except _Refused as refusal:
            return JSONResponse({"error": str(refusal)}, status_code=refusal.status)

    async def live_stream(websocket: WebSocket) -> None:
        await live_socket(websocket, live)

    routes = [Route("/", page), Route("/api/settings", settings),
              Route("/api/recognise", recognise_upload, methods=["POST"]),
              Mount("/static", StaticFiles(directory=STATIC), name="static")]
    return Starlette(routes=routes + ([WebSocketRoute("/api/live", live_stream)] if live is not None else []))
