"""Video encoding and decoding with PyAV (FFmpeg): VP9/WebM bit-exact for a given input, and any codec FFmpeg has."""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np
import torch
import torch.nn.functional as F

from qslr.pipelines.atomic_output import atomic_path
from qslr.pipelines.orientation import display_matrix


class VideoDecodeError(ValueError):
    """A video could not be decoded; the message names the file."""


@dataclass(frozen=True)
class Vp9Settings:
    crf: int = 18
    deadline: str = "realtime"  # 3x faster than "good" at the same quality for small frames
    cpu_used: int = 8
    gop: int = 32

    def codec_options(self) -> dict[str, str]:
        # One thread and no look-ahead/alt-ref frames: libvpx output then depends only on the
        # pixels, so the same frames give the same bytes, and every coded frame is a shown frame.
        return {
            "crf": str(self.crf),
            "b": "0",
            "deadline": self.deadline,
            "cpu-used": str(self.cpu_used),
            "lag-in-frames": "0",
            "auto-alt-ref": "0",
            "threads": "1",
            "row-mt": "0",
            "g": str(self.gop),
        }


def write_vp9(path: str | Path, frames: Iterable[np.ndarray], fps: int, settings: Vp9Settings = Vp9Settings()) -> int:
    """Encode RGB uint8 frames (H, W, 3) to a WebM file, the same bytes for the same frames; returns the number of
    frames written."""
    return encode_video(path, frames, fps, "libvpx-vp9", "webm", settings.codec_options(), bitexact=True)


# Chroma subsampled in both directions: such a picture needs even sides.
_HALF_SIZE_CHROMA = ("yuv420p", "yuvj420p")


def encode_video(destination: str | Path | BinaryIO, frames: Iterable[np.ndarray], fps: float,
                 codec: str = "libvpx-vp9", container_format: str | None = None,
                 codec_options: Mapping[str, str] | None = None, *, pixel_format: str = "yuv420p",
                 container_options: Mapping[str, str] | None = None, bitexact: bool = False,
                 timestamps: Sequence[float] | None = None, extras: StreamExtras | None = None) -> int:
    """Encode RGB uint8 frames (H, W, 3) with FFmpeg's ``codec`` into ``container_format`` (by default, the one the
    file name says); returns the number of frames written.

    A file is written under a temporary name and renamed once complete (`atomic_path`); a stream (an open binary
    file, a BytesIO) is written as it is. ``bitexact``: no date, random segment UID or library version in the
    container and none in the stream, so that the same frames give the same bytes. ``timestamps``: each frame's
    start in seconds, for a variable frame rate (default: one frame every 1 / ``fps``). ``extras``: a display
    matrix and an audio track, as cameras write them.
    """
    if isinstance(destination, (str, Path)):
        with atomic_path(destination) as partial:
            return _encode(partial, str(destination), frames, fps, codec, container_format, codec_options,
                           pixel_format, container_options, bitexact, timestamps, extras or StreamExtras())
    return _encode(destination, "video bytes", frames, fps, codec, container_format, codec_options, pixel_format,
                   container_options, bitexact, timestamps, extras or StreamExtras())


@dataclass(frozen=True)
class StreamExtras:
    """What a camera adds to its video stream: a display matrix (``rotation`` degrees counter-clockwise, then the
    mirrors, as PyAV's set_display_rotation takes them) and an audio track (a quiet tone: AAC, or Opus in WebM,
    which takes no AAC)."""

    rotation: float = 0.0
    hflip: bool = False
    vflip: bool = False
    audio: bool = False

    def add_display_matrix(self, stream) -> None:
        if self.rotation or self.hflip or self.vflip:
            stream.set_display_rotation(self.rotation, hflip=self.hflip, vflip=self.vflip)

    def audio_stream(self, container):
        if not self.audio:
            return None
        webm = "webm" in container.format.name.split(",")
        return container.add_stream("libopus" if webm else "aac", rate=48000, layout="mono")

    def write_audio(self, container, audio, seconds: float) -> None:
        """``seconds`` of the tone into ``audio`` (a stream of ``container``, or None: no track)."""
        if audio is None:
            return
        rate, samples = audio.codec_context.sample_rate, audio.codec_context.frame_size or 1024
        for start in range(0, max(1, round(seconds * rate)), samples):
            wave = 0.05 * np.sin(2 * np.pi * 440 * (start + np.arange(samples)) / rate, dtype=np.float32)
            frame = av.AudioFrame.from_ndarray(wave[None].astype(np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = rate, start
            container.mux(audio.encode(frame))
        container.mux(audio.encode())


def _encode(target: Path | BinaryIO, name: str, frames: Iterable[np.ndarray], fps: float, codec: str,
            container_format: str | None, codec_options: Mapping[str, str] | None, pixel_format: str,
            container_options: Mapping[str, str] | None, bitexact: bool, timestamps: Sequence[float] | None,
            extras: StreamExtras) -> int:
    options = dict(container_options or {})
    if bitexact:
        options["fflags"] = "+bitexact"
    count = 0
    with av.open(str(target) if isinstance(target, Path) else target, "w", format=container_format,
                 options=options) as container:
        stream = None
        audio = extras.audio_stream(container)
        for frame in frames:
            if stream is None:
                stream = _video_stream(container, name, frame.shape[:2], fps, codec, codec_options, pixel_format,
                                       bitexact, timestamps is not None)
                extras.add_display_matrix(stream)
            picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            if timestamps is not None:
                picture.pts, picture.time_base = round(1000 * timestamps[count]), _MILLISECOND
            container.mux(stream.encode(picture))
            count += 1
        if stream is None:
            raise ValueError(f"{name}: no frames to encode")
        container.mux(stream.encode())
        extras.write_audio(container, audio, (timestamps[count - 1] if timestamps is not None else
                                              (count - 1) / fps) + 1 / fps)
    return count


_MILLISECOND = Fraction(1, 1000)


def _video_stream(container, name: str, size: tuple[int, int], fps: float, codec: str,
                  codec_options: Mapping[str, str] | None, pixel_format: str, bitexact: bool, timed: bool):
    height, width = size
    if pixel_format in _HALF_SIZE_CHROMA and (height % 2 or width % 2):
        raise ValueError(f"{name}: {pixel_format} needs even frame sizes, got {width}x{height}")
    stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001), options=dict(codec_options or {}))
    stream.width, stream.height, stream.pix_fmt = width, height, pixel_format
    if bitexact:
        stream.codec_context.flags |= av.codec.context.Flags.bitexact
    if timed:
        stream.codec_context.time_base = stream.time_base = _MILLISECOND
    return stream


def yuv420p_to_rgb(planes: np.ndarray) -> np.ndarray:
    """Packed yuv420p frames (T, 3H/2, W) -> RGB uint8 (T, H, W, 3).

    BT.601 limited range with bilinear, centre-sited chroma upsampling: the conversion DALI's video decoder
    applies (99 % of values identical, none more than one level apart), so the reference loader and DALI
    give the same pixels.
    """
    frames, rows, width = planes.shape
    height = rows * 2 // 3
    data = torch.from_numpy(planes)
    # In place and channel-first, then one interleave of bytes at the end: writing three float channels
    # interleaved (a stack on the last axis) took most of the time, 2.4x slower for the same values.
    luma = data[:, :height].float().sub_(16.0).mul_(255.0 / 219.0)
    chroma = data[:, height:].reshape(frames, 2, height // 2, width // 2).float()
    chroma = F.interpolate(chroma, scale_factor=2, mode="bilinear", align_corners=False)
    chroma = chroma.sub_(128.0).mul_(255.0 / 224.0)
    cb, cr = chroma[:, 0], chroma[:, 1]
    rgb = torch.empty(frames, 3, height, width)
    torch.add(luma, cr, alpha=1.402, out=rgb[:, 0])
    torch.add(luma, cb, alpha=-0.344136, out=rgb[:, 1])
    rgb[:, 1].add_(cr, alpha=-0.714136)
    torch.add(luma, cb, alpha=1.772, out=rgb[:, 2])
    rgb = rgb.add_(0.5).floor_().clamp_(0, 255).to(torch.uint8)
    return rgb.permute(0, 2, 3, 1).contiguous().numpy()


class TruncatedVideoError(VideoDecodeError):
    """A video that ends before its container says it does: an upload or a copy that broke off."""


# MP4/MOV edit lists may hide a frame or two of those the header counts; AVI and the rest count exactly.
_FRAME_COUNT_SLACK = {"mov,mp4,m4a,3gp,3g2,mj2": 2}


def read_frames(source: str | Path | bytes) -> np.ndarray:
    """Decode a whole video (a path, or the bytes of a file) to RGB uint8 (T, H, W, 3).

    A video whose frames end before its container's declared duration or frame count, or whose decoding
    fails part-way, is refused as truncated (TruncatedVideoError) rather than returned in part.
    """
    return read_video(source)[0]


def _source_name(source: str | Path | bytes | BinaryIO) -> str:
    if isinstance(source, (bytes, bytearray)):
        return "video bytes"
    return str(getattr(source, "name", "video stream")) if hasattr(source, "read") else str(source)


def _open(source: str | Path | bytes | BinaryIO, input_format: str | None = None):
    """(name for messages, an open container, its first video stream). ``source``: a path, a file's bytes, or a
    stream read as it comes (a pipe); ``input_format``: FFmpeg's name for a device's input (v4l2), else guessed."""
    name = _source_name(source)
    if isinstance(source, (bytes, bytearray)) and not source:
        raise VideoDecodeError(f"{name}: empty video")
    opened = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else \
        source if hasattr(source, "read") else str(source)
    container = av.open(opened, format=input_format)
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(f"{name}: holds no video stream")
    return name, container, container.streams.video[0]


def _cannot_decode(name: str, exc: Exception) -> VideoDecodeError:
    if isinstance(exc, VideoDecodeError):
        return exc
    return VideoDecodeError(f"{name}: cannot decode video ({exc})")


def read_video(source: str | Path | bytes) -> tuple[np.ndarray, float]:
    """As `read_frames`, with the video's frame rate (0.0 where its container states none)."""
    with VideoReader(source) as reader:
        chunks = list(reader.chunks(_WHOLE_VIDEO_CHUNK))
        return (chunks[0] if len(chunks) == 1 else np.concatenate(chunks)), reader.fps


# Frames decoded before each colour conversion when a video is read whole: the conversion's float copies of
# a chunk are then small beside the video's own frames.
_WHOLE_VIDEO_CHUNK = 256


class VideoReader:
    """A video's frames as RGB uint8 chunks (n, H, W, 3), decoded a chunk at a time, so that a long video is
    never held whole. The checks of `read_frames` hold: a decoding failure part-way, or frames ending before
    what the container declares, raise TruncatedVideoError naming how much could be read, after the chunks
    before it have been given."""

    def __init__(self, source: str | Path | bytes | BinaryIO, input_format: str | None = None):
        self.name = _source_name(source)
        try:
            self.name, self._container, self._stream = _open(source, input_format)
        except (av.FFmpegError, IndexError, ValueError) as exc:
            raise _cannot_decode(self.name, exc) from None
        # One decoding thread: loaders parallelise over videos, and FFmpeg's own threads would only compete
        # with their workers for the same cores.
        self._stream.thread_count = 1
        self.fps = _frames_per_second(self._stream)
        self.display_matrix: tuple[int, ...] | None = None
        self.end: float | None = None

    def __enter__(self) -> VideoReader:
        return self

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) the stream states for its frames; 1080x1920 where it states none."""
        context = self._stream.codec_context
        return (context.height, context.width) if context.height and context.width else (1080, 1920)

    def __exit__(self, *exc_info) -> None:
        self._container.close()

    def chunks(self, size: int) -> Iterator[np.ndarray]:
        for frames, _ in self.timed_chunks(size):
            yield frames

    def timed_chunks(self, size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """As `chunks`, each chunk with its frames' start times in seconds (float64, presentation order). Once
        the first chunk is given, ``display_matrix`` holds the frames' display matrix (None: shown as stored);
        once the last is, ``end`` is where the video's content ends (the last frame's start plus its duration)."""
        count, last, as_planes, pending, starts, failure = 0, None, None, [], [], None
        try:
            try:
                for frame in self._container.decode(self._stream):
                    if as_planes is None:
                        as_planes = frame.format.name == "yuv420p" and frame.width % 2 == 0 and frame.height % 2 == 0
                        self.display_matrix = display_matrix(frame)
                    if last is not None and frame.pts is not None and last.pts is not None:
                        _check_no_gap(self.name, self._stream, _seconds(last, self._stream),
                                      float(frame.pts * frame.time_base), count)
                    pending.append(frame)
                    starts.append(_start(frame, count, self.fps))
                    count, last = count + 1, frame
                    if len(pending) == size:
                        yield _to_rgb(pending, as_planes), np.array(starts)
                        pending, starts = [], []
            except av.FFmpegError as exc:
                failure = exc
            self.end = _seconds(last, self._stream) if count else 0.0
            _check_ending(self.name, self._container, self._stream, count, self.end, failure, "decoding failed")
            if pending:
                yield _to_rgb(pending, as_planes), np.array(starts)
        except (av.FFmpegError, IndexError, ValueError) as exc:
            raise _cannot_decode(self.name, exc) from None


def _start(item, index: int, fps: float) -> float:
    """A frame's or packet's start in seconds; where it has no timestamp, its place at the stated rate."""
    if item.pts is None or item.time_base is None:
        return index / fps if fps else 0.0
    return float(item.pts * item.time_base)


# A stretch without frames longer than both of these is damage, not a variable frame rate's slow moment.
MAX_GAP_SECONDS = 1.0
MAX_GAP_FRAMES = 10


def _check_no_gap(name: str, stream, since: float, until: float, count: int) -> None:
    """A damaged stretch of a file makes the demuxer skip to the next readable cluster, and FFmpeg's decoders
    drop damaged frames, both without an error: the video then decodes shorter, with a jump in it. ``since``:
    where the content read so far ends; ``until``: where the next frame starts."""
    if until - since > max(MAX_GAP_SECONDS, MAX_GAP_FRAMES * _frame_period(stream)):
        raise TruncatedVideoError(f"{name}: the video is corrupt midway: it has no frames from {since:.2f} s to "
                                  f"{until:.2f} s ({count} frames before it could be read)")


def _to_rgb(frames: list, as_planes: bool) -> np.ndarray:
    if as_planes:
        return yuv420p_to_rgb(np.stack([f.to_ndarray(format="yuv420p") for f in frames]))
    return np.stack([f.to_ndarray(format="rgb24") for f in frames])


@dataclass(frozen=True)
class VideoProbe:
    codec: str  # FFmpeg's codec name: vp9, vp8, mjpeg, h264, ...
    packets: int  # coded pictures; one per shown frame for the codecs DALI decodes
    fps: float  # 0.0 where the container states none
    width: int
    height: int
    starts: tuple[float, ...] = ()  # each frame's start in seconds, in presentation order (the packets' times)
    end: float = 0.0  # where the content ends: the latest a packet reaches


def probe_video(source: str | Path | bytes) -> VideoProbe:
    """Read a video's container without decoding it (about 1 ms for a 4 s clip), and refuse it as
    `read_frames` would when its packets end before the duration or frame count the container declares."""
    name = "video bytes" if isinstance(source, (bytes, bytearray)) else str(source)
    try:
        name, container, stream = _open(source)
        with container:
            if stream.codec_context is None:  # the stream names a codec FFmpeg has no decoder for
                raise VideoDecodeError(f"{name}: cannot decode video (no decoder for its video stream's codec)")
            # Packets come in decoding order; with B-frames the last one is not the last shown, so the
            # readable end is the latest any packet reaches.
            count, end, failure, starts = 0, 0.0, None, []
            fps = _frames_per_second(stream)
            try:
                for packet in container.demux(stream):
                    if packet.is_corrupt:  # a demuxer's mark for a packet it could read only in part
                        raise TruncatedVideoError(
                            f"{name}: the video is truncated or incomplete: frame {count + 1} of it is incomplete "
                            f"({end:.2f} s could be read)")
                    if packet.size:
                        if count and packet.pts is not None:  # decoding order: compared with the furthest yet
                            _check_no_gap(name, stream, end, float(packet.pts * packet.time_base), count)
                        starts.append(_start(packet, count, fps))
                        count, end = count + 1, max(end, _seconds(packet, stream))
            except av.FFmpegError as exc:
                failure = exc
            _check_ending(name, container, stream, count, end, failure, "its container breaks off")
            return VideoProbe(stream.codec_context.name, count, fps, stream.codec_context.width,
                              stream.codec_context.height, tuple(sorted(starts)), end)
    except (av.FFmpegError, IndexError, ValueError) as exc:
        raise _cannot_decode(name, exc) from None


def read_display_matrix(source: str | Path | bytes) -> tuple[int, ...] | None:
    """The display matrix of a video's frames, from its first decoded frame (None: shown as stored): for decoders
    that hand frames on without it (DALI's)."""
    name = "video bytes" if isinstance(source, (bytes, bytearray)) else str(source)
    try:
        name, container, stream = _open(source)
        with container:
            stream.thread_count = 1  # frame threads would hold the first frame back for as many packets
            for frame in container.decode(stream):
                return display_matrix(frame)
    except (av.FFmpegError, IndexError, ValueError) as exc:
        raise _cannot_decode(name, exc) from None
    raise VideoDecodeError(f"{name}: video has no frames")


def _frames_per_second(stream) -> float:
    period = _frame_period(stream)
    return 1.0 / period if period else 0.0


def _frame_period(stream) -> float:
    rate = stream.average_rate or stream.guessed_rate
    return 1.0 / float(rate) if rate else 0.0


def _seconds(item, stream) -> float:
    """Where the video's content ends with ``item`` (a frame or a packet): its start plus its duration."""
    if item.pts is None or item.time_base is None:
        return 0.0
    duration = float(item.duration * item.time_base) if item.duration else _frame_period(stream)
    return float(item.pts * item.time_base) + duration


def _check_ending(name: str, container, stream, count: int, end_seconds: float, failure: av.FFmpegError | None,
                  breaking_off: str) -> None:
    """How reading a whole video ended, decoding its frames or only its packets: ``failure``, FFmpeg's error that
    stopped it, if any. An error after some frames is a truncated video (``breaking_off`` says what failed); an
    error before any, or no frames at all, is no video; and what was read must be all the container declares."""
    if failure is not None:
        if not count:
            raise failure
        raise TruncatedVideoError(f"{name}: the video is truncated or incomplete: {breaking_off} after {count} "
                                  f"frames ({end_seconds:.2f} s could be read): {failure}")
    if not count:
        raise VideoDecodeError(f"{name}: video has no frames")
    _check_complete(name, container, stream, count, end_seconds)


def _declared_seconds(container, stream) -> float | None:
    """How long the container says the video stream lasts: its own duration (Matroska's DURATION tag), else the
    container's, less what other streams may add: a camera's audio track ends on its own sample frames, tens of
    milliseconds after the last picture."""
    tag = stream.metadata.get("DURATION", "")
    hours, _, rest = tag.partition(":")
    minutes, _, seconds = rest.partition(":")
    if hours.isdigit() and minutes.isdigit() and seconds.replace(".", "", 1).isdigit():
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    if container.duration is None or container.duration <= 0:
        return None
    return container.duration / av.time_base - (_OTHER_STREAMS_SLACK_S if len(container.streams) > 1 else 0.0)


# How much longer than the video a container's other streams (audio) may make its stated duration.
_OTHER_STREAMS_SLACK_S = 0.1


def _check_complete(name: str, container, stream, count: int, end_seconds: float) -> None:
    """Compare what could be read (``count`` frames, the last ending at ``end_seconds``) with what the
    container declares: AVI and MP4 headers count the frames; Matroska and WebM state a duration (live
    recordings may state none, and are then taken as they are)."""
    if stream.frames > 0:
        missing = stream.frames - count
        if missing > _FRAME_COUNT_SLACK.get(container.format.name, 0):
            raise TruncatedVideoError(f"{name}: the video is truncated or incomplete: its container declares "
                                      f"{stream.frames} frames, only {count} could be read")
        return
    declared = _declared_seconds(container, stream)
    if declared is None:
        return
    start = container.start_time / av.time_base if container.start_time is not None else 0.0
    readable = end_seconds - start
    if readable < declared - _frame_period(stream) / 2:
        raise TruncatedVideoError(f"{name}: the video is truncated or incomplete: its container declares "
                                  f"{declared:.2f} s, only {readable:.2f} s ({count} frames) could be read")


# The resize works on float32 copies of its frames (4 bytes a value, in and out): it takes a video this many bytes
# of them at a time, so that its working memory does not grow with the video's length.
RESIZE_CHUNK_BYTES = 256 * 2**20


def resize_frames(frames: np.ndarray | torch.Tensor, height: int, width: int) -> np.ndarray:
    """Bilinear resize of uint8 (T, H, W, 3) frames, when they are not already (height, width), to host memory.

    Frames in GPU memory (a CUDA tensor) are resized there, and only the resized frames are copied to the host.
    Each frame is resized on its own, so the frames taken at a time do not change a value."""
    if isinstance(frames, np.ndarray):
        if frames.shape[1:3] == (height, width):
            return frames
        frames = torch.from_numpy(frames)
    count, source_height, source_width, _ = frames.shape
    if (source_height, source_width) == (height, width):
        return frames.cpu().numpy()
    resized = np.empty((count, height, width, 3), np.uint8)
    step = max(1, RESIZE_CHUNK_BYTES // (4 * 3 * max(source_height * source_width, height * width)))
    for start in range(0, count, step):
        chunk = frames[start:start + step].permute(0, 3, 1, 2).float()
        chunk = F.interpolate(chunk, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
        resized[start:start + step] = chunk.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return resized
