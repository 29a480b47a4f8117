"""Uploaded videos -> the frames the served model takes: decoded, framed as the model's training frames were
(pipelines/framing.py: upright, on its frame rate, cropped to its aspect, resized), checked against the limits.

One code path for everything that recognises a video file: the Triton `preprocess` model and local
recognition (`qslr recognise`) both call a `ClipDecoder`, so a video gets the same frames, and the same
answer, whichever way it is recognised. A batch of videos goes in, each with its request's framing options; each
comes back as a `DecodedClip`, with a record of what was done to it, or as the error that refuses it alone, so one
bad upload never fails the others.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from qslr.deploy import tensor_names as names
from qslr.deploy.decoder_choices import CLIP_DECODERS, DALI, GPU_SUFFIX, PYAV
from qslr.deploy.decoder_fallbacks import (
    CODEC,
    FRAME_COUNT,
    OVER_BUDGET,
    RUN_FAILED,
    TOO_SMALL,
    UNAVAILABLE,
    DecoderFallbacks,
)
from qslr.deploy.served_limits import ClipTooLongError, ServedLimits
from qslr.pipelines.dali_video import NVDEC_VP9_MIN_SIZE, VideoDecodePipeline, decoded_bytes, decoding_runs
from qslr.pipelines.frame_placement import placed_frames
from qslr.pipelines.framing import FrameTarget, FramingError, FramingRecord, frame_decoded, read_framed
from qslr.pipelines.framing_options import FramingOptions, Region
from qslr.pipelines.source_framing import SourceFraming
from qslr.pipelines.video_io import VideoDecodeError, VideoProbe, probe_video, read_display_matrix

Video = bytes | str | Path
T = TypeVar("T")
log = logging.getLogger(__name__)


def isolated(video: Video, work: Callable[[], T]) -> T | Exception:
    """``work`` on one upload, whatever it raises kept with that upload: the refusals QSLR names (a corrupt,
    truncated or too long video, an unreadable file) as they are, anything else (a damaged file reaching a corner
    of FFmpeg's bindings or of DALI) as a one-line VideoDecodeError naming the upload, its traceback logged."""
    try:
        return work()
    except (VideoDecodeError, ClipTooLongError, FramingError, OSError) as exc:  # OSError: a local file unread
        return exc
    except Exception as exc:  # noqa: BLE001 - isolation by construction, not by a list of the errors foreseen
        name = "video bytes" if isinstance(video, (bytes, bytearray)) else str(video)
        log.warning("%s: unexpected %s while decoding; refused alone", name, type(exc).__name__, exc_info=True)
        detail = (str(exc).strip().splitlines() or [""])[0]
        return VideoDecodeError(f"{name}: cannot decode this video ({type(exc).__name__}{': ' if detail else ''}"
                                f"{detail})")


@dataclass(frozen=True)
class DecodedClip:
    frames: np.ndarray  # uint8 (T, H, W, 3) at the model's frame size and rate
    fps: float  # their rate: the model's, or the video's where the model states none (0.0: neither)
    framing: FramingRecord  # what was done to the video to make them


def framing_options(parameters: Mapping[str, object]) -> FramingOptions:
    """A request's framing options from its parameters (``framing``: crop or letterbox; ``region``: x,y,width,height
    of the upright picture); ValueError names what is wrong."""
    framing, region = parameters.get(names.FRAMING_PARAMETER), parameters.get(names.REGION_PARAMETER)
    if framing is not None and not isinstance(framing, str):
        raise ValueError(f"{names.FRAMING_PARAMETER} must be a string, got {framing!r}")
    if region is not None and not isinstance(region, str):
        raise ValueError(f"{names.REGION_PARAMETER} must be a string x,y,width,height, got {region!r}")
    return FramingOptions(framing or None, Region.parse(region) if region else None)


def frame_target(height: int, width: int, fps: float | None = None, source: SourceFraming | None = None
                 ) -> FrameTarget:
    """What the decoders bring a video to: the model's frame size and rate (None: keep the video's), showing a picture
    of the training sources' aspect (None: the frame size's, resized)."""
    return FrameTarget(height, width, fps or None, source or SourceFraming.of_size(width, height))


def served_frame_target(parameters: dict[str, str]) -> FrameTarget:
    """What `preprocess` and `cslr` bring an upload to, as the builder wrote it from the checkpoint: the frame size,
    the model's frame rate and how its training frames were made (a repository built before these were written
    keeps each upload's own rate and takes the frame size's aspect)."""
    height, width = int(parameters["height"]), int(parameters["width"])
    source = SourceFraming(float(parameters["source_aspect"]), parameters["framing_rule"]) \
        if "source_aspect" in parameters else None
    return frame_target(height, width, float(parameters.get("fps", 0.0)), source)


def _options(options: Sequence[FramingOptions] | None, count: int) -> Sequence[FramingOptions]:
    if options is None:
        return [FramingOptions()] * count
    if len(options) != count:
        raise ValueError(f"{count} videos and {len(options)} framing options")
    return options


class PyAVClipDecoder:
    """FFmpeg through PyAV: every container and codec FFmpeg reads, the videos of a batch on ``threads``
    threads (FFmpeg and the colour conversion release the GIL)."""

    name = PYAV

    def __init__(self, height: int, width: int, limits: ServedLimits, threads: int = 2, fps: float | None = None,
                 source: SourceFraming | None = None):
        self.height, self.width, self.limits = height, width, limits
        self.target = frame_target(height, width, fps, source)
        self.threads = threads

    def decode_one(self, video: Video, options: FramingOptions | None = None) -> DecodedClip:
        """Decoded and framed a chunk at a time: a 1080p upload is never held whole at its own size."""
        frames, record = read_framed(video, self.target, options or FramingOptions())
        self.limits.check_length(len(frames))
        return DecodedClip(frames, record.fps, record)

    def _decode_or_error(self, job: tuple[Video, FramingOptions], probe_first: bool) -> DecodedClip | Exception:
        video, options = job

        def work() -> DecodedClip:
            if probe_first:
                # Refused before decoding: a long upload would otherwise be decoded whole.
                self.limits.check_length(placed(probe_video(video), self.target))
            return self.decode_one(video, options)

        return isolated(video, work)

    def decode(self, videos: Sequence[Video], options: Sequence[FramingOptions] | None = None,
               probed: bool = False) -> list[DecodedClip | Exception]:
        """``options``: each video's request's (default: the model's framing); ``probed``: the caller has already
        read each container (`probe_video`) and checked its length."""
        work = functools.partial(self._decode_or_error, probe_first=not probed)
        jobs = list(zip(videos, _options(options, len(videos)), strict=True))
        if len(videos) < 2 or self.threads < 2:
            return [work(job) for job in jobs]
        with ThreadPoolExecutor(min(self.threads, len(videos))) as pool:
            return list(pool.map(work, jobs))


def placed(probe: VideoProbe, target: FrameTarget) -> int:
    """How many frames at the model's rate a probed video gives: what the served limits count."""
    return placed_frames(probe.starts, probe.end, target.fps) if probe.starts else probe.packets


# What DALI's video decoder reads: on the CPU only these (H.264 and the rest need NVDEC); on a GPU, NVDEC's.
DALI_CPU_CODECS = frozenset({"vp8", "vp9", "mjpeg"})
DALI_GPU_CODECS = frozenset({"vp8", "vp9", "mjpeg", "h264", "hevc", "av1"})

# The most memory one DALI run may hold for its uploads' decoded frames (`decoded_bytes`: full-size RGB frames and
# the decoder's own), on the GPU with NVDEC: the bound on decoding a batch, however many uploads it holds and
# whatever their size. A batch is decoded in as many runs as this needs; an upload that alone exceeds it goes to
# PyAV. 4 GiB holds a whole batch of 16 Phoenix-sized uploads (400 frames of 260x210: 1.1 GB) and one 400-frame
# 1080p upload (2.6 GB); docs/serving_gpu.md states the bound.
DECODING_BUDGET_BYTES = 4 * 2**30


class DaliClipDecoder:
    """DALI's video decoder, the training loader's (pipelines/dali_video.py): a batch of uploads is decoded
    by DALI's thread pool at once on the CPU, or by NVDEC (``device="gpu"``).

    Each upload is first read without decoding (`probe_video`), which refuses a truncated one exactly as
    PyAV decoding does and tells its codec, size and frame count. From those the uploads are grouped into
    DALI runs whose decoded frames fit ``budget_bytes`` (`decoding_runs`); each run's frames are resized where
    they were decoded, on the GPU with NVDEC, and only the model-sized frames reach the host, before the next
    run. PyAV decodes what DALI does not, each such upload counted and the reason logged (`DecoderFallbacks`):
    every upload where DALI cannot start (its test clip fails at load: no GPU, no NVDEC in a container), codecs
    DALI cannot decode here (H.264 on the CPU, for one), frames too small for NVDEC, an upload over the budget
    alone, and every upload of a run that DALI fails as a whole, so that the broken upload gets its own error
    and the others their frames.
    """

    name = DALI

    def __init__(self, height: int, width: int, limits: ServedLimits, device: str = "cpu", device_id: int = 0,
                 threads: int = 2, budget_bytes: int = DECODING_BUDGET_BYTES,
                 report: Callable[[str], None] | None = None, fps: float | None = None,
                 source: SourceFraming | None = None):
        self.height, self.width, self.limits = height, width, limits
        self.target = frame_target(height, width, fps, source)
        self.gpu, self.budget_bytes = device == "gpu", budget_bytes
        self.fallback = PyAVClipDecoder(height, width, limits, threads, fps, source)
        self.fallbacks = DecoderFallbacks(DALI + (GPU_SUFFIX if self.gpu else ""), report)
        self.codecs = DALI_GPU_CODECS if self.gpu else DALI_CPU_CODECS
        self.pipeline = self._start(threads, device, device_id)

    def _start(self, threads: int, device: str, device_id: int) -> VideoDecodePipeline | None:
        """DALI's pipeline, once it has decoded a test clip; None (and said so) where it cannot decode here."""
        try:
            pipeline = VideoDecodePipeline(self.limits.max_batch, threads, device, device_id)
            pipeline.self_test()
            return pipeline
        except Exception as exc:  # noqa: BLE001 - whatever stops DALI here (no GPU, no NVDEC, no DALI), PyAV serves
            self.fallbacks.record(UNAVAILABLE, 0, _dali_error(exc))
            return None

    def decode(self, videos: Sequence[Video], options: Sequence[FramingOptions] | None = None
               ) -> list[DecodedClip | Exception]:
        """``options``: each video's request's (default: the model's framing)."""
        options = _options(options, len(videos))
        results: list[DecodedClip | Exception | None] = [None] * len(videos)
        probes: dict[int, VideoProbe] = {}
        for index, video in enumerate(videos):
            probe = isolated(video, functools.partial(self._probe, video))
            if isinstance(probe, Exception):
                results[index] = probe
            else:
                probes[index] = probe
        to_pyav: dict[int, tuple[str, str]] = {}  # upload -> (reason, detail)
        ours = []
        for index, probe in probes.items():
            reason = self._not_ours(probe)
            if reason:
                to_pyav[index] = reason
            else:
                ours.append(index)
        if ours:
            sizes = [decoded_bytes(probes[i].packets, probes[i].height, probes[i].width) for i in ours]
            for run in decoding_runs(sizes, self.budget_bytes, self.pipeline.batch_size):
                self._decode_run(videos, options, [ours[k] for k in run], probes, results, to_pyav)
        self._decode_with_pyav(videos, options, to_pyav, results)
        return results

    def _probe(self, video: Video) -> VideoProbe:
        probe = probe_video(video)
        self.limits.check_length(placed(probe, self.target))
        return probe

    def _not_ours(self, probe: VideoProbe) -> tuple[str, str] | None:
        """Why PyAV, not DALI, decodes this upload (reason, detail), or None."""
        if self.pipeline is None:
            return UNAVAILABLE, "its test clip failed at load"
        if probe.codec not in self.codecs:
            return CODEC, probe.codec
        min_width, min_height = NVDEC_VP9_MIN_SIZE
        if self.gpu and (probe.width < min_width or probe.height < min_height):
            return TOO_SMALL, f"{probe.width}x{probe.height}, NVDEC's minimum is {min_width}x{min_height}"
        size = decoded_bytes(probe.packets, probe.height, probe.width)
        if size > self.budget_bytes:
            return OVER_BUDGET, (f"{probe.packets} frames of {probe.width}x{probe.height}: {size / 2**30:.2f} GiB "
                                 f"against {self.budget_bytes / 2**30:.2f} GiB")
        return None

    def _decode_run(self, videos: Sequence[Video], options: Sequence[FramingOptions], indices: list[int],
                    probes: dict[int, VideoProbe], results: list, to_pyav: dict[int, tuple[str, str]]) -> None:
        """One DALI run: its uploads' frames, resized where DALI put them; its full-size frames are released
        when this returns, before the next run allocates its own."""
        try:
            encoded = [np.frombuffer(_read(videos[i]), dtype=np.uint8) for i in indices]
            decoded = self.pipeline.decode(encoded)
        except Exception as exc:  # noqa: BLE001 - whatever fails the run, PyAV then decodes each upload alone
            detail = f"{_dali_error(exc)}; a run of {len(indices)}"
            to_pyav.update((index, (RUN_FAILED, detail)) for index in indices)
            return
        for index, frames in zip(indices, decoded, strict=True):
            probe = probes[index]
            # A frame count other than the container's packets means DALI read the stream differently
            # from FFmpeg; PyAV then decides, as it does for every video DALI does not take.
            if len(frames) == probe.packets:
                results[index] = isolated(videos[index], functools.partial(self._finish, videos[index], frames, probe,
                                                                           options[index]))
            else:
                to_pyav[index] = FRAME_COUNT, f"{len(frames)} frames decoded, {probe.packets} in the container"

    def _finish(self, video: Video, frames, probe: VideoProbe, options: FramingOptions) -> DecodedClip:
        """DALI's frames, as stored, framed as PyAV's are: the display matrix (which DALI does not apply) read from
        the first frame FFmpeg decodes, the start times from the probe's packets."""
        name = "video bytes" if isinstance(video, (bytes, bytearray)) else str(video)
        framed, record = frame_decoded(frames, probe.starts, probe.end, read_display_matrix(video), probe.fps,
                                       self.target, options, name)
        self.limits.check_length(len(framed))
        return DecodedClip(framed, record.fps, record)

    def _decode_with_pyav(self, videos: Sequence[Video], options: Sequence[FramingOptions],
                          to_pyav: dict[int, tuple[str, str]], results: list) -> None:
        details: dict[str, list[str]] = {}
        for reason, detail in to_pyav.values():
            details.setdefault(reason, []).append(detail)
        for reason, said in details.items():
            self.fallbacks.record(reason, len(said), said[0])
        indices = sorted(to_pyav)
        if indices:
            decoded = self.fallback.decode([videos[i] for i in indices], [options[i] for i in indices], probed=True)
            for index, result in zip(indices, decoded, strict=True):
                results[index] = result


def _dali_error(exc: Exception) -> str:
    """DALI's reason in one line: a pipeline's error says it after "encountered:", amid its own traceback."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if "encountered:" in lines[:-1]:
        lines = lines[lines.index("encountered:") + 1:]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]


def _read(video: Video) -> bytes:
    return video if isinstance(video, (bytes, bytearray)) else Path(video).read_bytes()


DECODERS = dict(zip(CLIP_DECODERS, (PyAVClipDecoder, DaliClipDecoder), strict=True))


def clip_decoder(name: str, height: int, width: int, limits: ServedLimits, **options):
    """``options``: threads, fps and source (the model's rate and training framing) for both; device ("cpu" or
    "gpu"), device_id, budget_bytes and report for DALI."""
    if name not in DECODERS:
        raise ValueError(f"unknown video decoder {name!r} (known: {', '.join(DECODERS)})")
    return DECODERS[name](height, width, limits, **options)
