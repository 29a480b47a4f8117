"""Uploaded videos -> the frames the served model takes: decoded, checked against the served limits, resized.

One code path for everything that recognises a video file: the Triton `preprocess` model and local
recognition (`qslr recognise`) both call a `ClipDecoder`, so a video gets the same frames, and the same
answer, whichever way it is recognised. A batch of videos goes in; each comes back as a `DecodedClip` or
as the error that refuses it alone, so one bad upload never fails the others.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from qslr.deploy.decoder_choices import CLIP_DECODERS, DALI, PYAV
from qslr.deploy.served_limits import ClipTooLongError, ServedLimits
from qslr.pipelines.video_io import VideoDecodeError, VideoProbe, probe_video, read_video, resize_frames

Video = bytes | str | Path
T = TypeVar("T")
log = logging.getLogger(__name__)


def isolated(video: Video, work: Callable[[], T]) -> T | Exception:
    """``work`` on one upload, whatever it raises kept with that upload: the refusals QSLR names (a corrupt,
    truncated or too long video, an unreadable file) as they are, anything else (a damaged file reaching a corner
    of FFmpeg's bindings or of DALI) as a one-line VideoDecodeError naming the upload, its traceback logged."""
    try:
        return work()
    except (VideoDecodeError, ClipTooLongError, OSError) as exc:  # OSError: a local file that cannot be read
        return exc
    except Exception as exc:  # noqa: BLE001 - isolation by construction, not by a list of the errors foreseen
        name = "video bytes" if isinstance(video, (bytes, bytearray)) else str(video)
        log.warning("%s: unexpected %s while decoding; refused alone", name, type(exc).__name__, exc_info=True)
        detail = (str(exc).strip().splitlines() or [""])[0]
        return VideoDecodeError(f"{name}: cannot decode this video ({type(exc).__name__}{': ' if detail else ''}"
                                f"{detail})")


@dataclass(frozen=True)
class DecodedClip:
    frames: np.ndarray  # uint8 (T, H, W, 3) at the model's frame size; T is the video's own frame count
    fps: float  # the video's frame rate, 0.0 where its container states none


class PyAVClipDecoder:
    """FFmpeg through PyAV: every container and codec FFmpeg reads, the videos of a batch on ``threads``
    threads (FFmpeg and the colour conversion release the GIL)."""

    name = PYAV

    def __init__(self, height: int, width: int, limits: ServedLimits, threads: int = 2):
        self.height, self.width, self.limits = height, width, limits
        self.threads = threads

    def decode_one(self, video: Video) -> DecodedClip:
        frames, fps = read_video(video)
        self.limits.check_length(len(frames))
        return DecodedClip(resize_frames(frames, self.height, self.width), fps)

    def _decode_or_error(self, video: Video, probe_first: bool) -> DecodedClip | Exception:
        def work() -> DecodedClip:
            if probe_first:
                # Refused before decoding: a long upload would otherwise be decoded whole, at full size.
                self.limits.check_length(probe_video(video).packets)
            return self.decode_one(video)

        return isolated(video, work)

    def decode(self, videos: Sequence[Video], probed: bool = False) -> list[DecodedClip | Exception]:
        """``probed``: the caller has already read each container (`probe_video`) and checked its length."""
        work = functools.partial(self._decode_or_error, probe_first=not probed)
        if len(videos) < 2 or self.threads < 2:
            return [work(video) for video in videos]
        with ThreadPoolExecutor(min(self.threads, len(videos))) as pool:
            return list(pool.map(work, videos))


# What DALI's video decoder reads: on the CPU only these (H.264 and the rest need NVDEC); on a GPU, NVDEC's.
DALI_CPU_CODECS = frozenset({"vp8", "vp9", "mjpeg"})
DALI_GPU_CODECS = frozenset({"vp8", "vp9", "mjpeg", "h264", "hevc", "av1"})


class DaliClipDecoder:
    """DALI's video decoder, the training loader's (pipelines/dali_video.py): a batch of uploads is decoded
    by DALI's thread pool at once on the CPU, or by NVDEC (``device="gpu"``).

    Each upload is first read without decoding (`probe_video`), which refuses a truncated one exactly as
    PyAV decoding does and tells its codec. Codecs DALI cannot decode here (H.264 on the CPU, for one) go
    to PyAV, and so does every video of a batch that DALI fails as a whole, so that the broken upload gets
    its own error and the others their frames.
    """

    name = DALI

    def __init__(self, height: int, width: int, limits: ServedLimits, device: str = "cpu", device_id: int = 0,
                 threads: int = 2):
        from qslr.pipelines.dali_video import VideoDecodePipeline

        self.height, self.width, self.limits = height, width, limits
        self.fallback = PyAVClipDecoder(height, width, limits, threads=threads)
        self.codecs = DALI_GPU_CODECS if device == "gpu" else DALI_CPU_CODECS
        self.pipeline = VideoDecodePipeline(limits.max_batch, threads, device, device_id)

    def _finish(self, frames: np.ndarray, probe: VideoProbe) -> DecodedClip:
        self.limits.check_length(len(frames))
        return DecodedClip(resize_frames(frames, self.height, self.width), probe.fps)

    def decode(self, videos: Sequence[Video]) -> list[DecodedClip | Exception]:
        results: list[DecodedClip | Exception | None] = [None] * len(videos)
        for start in range(0, len(videos), self.pipeline.batch_size):
            chunk = range(start, min(start + self.pipeline.batch_size, len(videos)))
            self._decode_chunk(videos, chunk, results)
        return results

    def _decode_chunk(self, videos: Sequence[Video], chunk: range, results: list) -> None:
        probes: dict[int, VideoProbe] = {}
        for index in chunk:
            probe = isolated(videos[index], functools.partial(self._probe, videos[index]))
            if isinstance(probe, Exception):
                results[index] = probe
            else:
                probes[index] = probe
        ours = [i for i, probe in probes.items() if probe.codec in self.codecs]
        decoded = self._run(videos, ours) if ours else {}
        to_pyav = []
        for index, probe in probes.items():
            frames = decoded.get(index)
            # A frame count other than the container's packets means DALI read the stream differently
            # from FFmpeg; PyAV then decides, as it does for every video DALI does not take.
            if frames is not None and len(frames) == probe.packets:
                results[index] = isolated(videos[index], functools.partial(self._finish, frames, probe))
            else:
                to_pyav.append(index)
        if to_pyav:
            decoded_by_pyav = self.fallback.decode([videos[i] for i in to_pyav], probed=True)
            for index, result in zip(to_pyav, decoded_by_pyav, strict=True):
                results[index] = result

    def _probe(self, video: Video) -> VideoProbe:
        probe = probe_video(video)
        self.limits.check_length(probe.packets)
        return probe

    def _run(self, videos: Sequence[Video], indices: list[int]) -> dict[int, np.ndarray]:
        try:
            encoded = [np.frombuffer(_read(videos[i]), dtype=np.uint8) for i in indices]
            return dict(zip(indices, self.pipeline.decode(encoded), strict=True))
        except Exception as exc:  # noqa: BLE001 - whatever fails the batch, PyAV then decodes each video alone
            log.warning("DALI failed a batch of %d videos, PyAV decodes them one by one: %s", len(indices),
                        str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__)
            return {}


def _read(video: Video) -> bytes:
    return video if isinstance(video, (bytes, bytearray)) else Path(video).read_bytes()


DECODERS = dict(zip(CLIP_DECODERS, (PyAVClipDecoder, DaliClipDecoder), strict=True))


def clip_decoder(name: str, height: int, width: int, limits: ServedLimits, **options):
    """``options``: threads for both; device ("cpu" or "gpu") and device_id for DALI."""
    if name not in DECODERS:
        raise ValueError(f"unknown video decoder {name!r} (known: {', '.join(DECODERS)})")
    return DECODERS[name](height, width, limits, **options)
