"""Videos as people record them, re-recorded from a prepared dataset's clips: the kinds `qslr bench recorded`
scores and the tests recognise.

A prepared clip is what a model was trained on: square, upright, 25 fps, VP9. Phones and webcams store the same
signing otherwise: H.264 or 10-bit HEVC with an audio track, at 30 or 60 fps or a variable rate, portrait frames
stored on their side with a display matrix saying how to turn them, a 16:9 picture with the signer in its middle
at half to full height. Each kind here stores a clip the way one of them would. The signer is the clip scaled into
a larger picture whose background continues the clip's own (its border colour, with a gentle gradient and a
camera's noise); each new frame at time t shows the clip's frame nearest t, as a camera at that rate would.
``scale`` shrinks every picture size (1.0: 1080p), for runs where encoding full-size pictures would cost
more than it tells.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qslr.pipelines.framing_options import FramingOptions, Region
from qslr.pipelines.video_io import StreamExtras, encode_video, read_frames, resize_frames

CLIP_FPS = 25.0  # the rate of the prepared clips the kinds are made from


@dataclass(frozen=True)
class RecordedKind:
    name: str
    description: str
    canvas: tuple[int, int] = (1080, 1080)  # (width, height) of the upright picture at scale 1
    fill: float = 1.0  # the clip's side as a share of the picture's height (cut at the sides where wider)
    fps: float = 30.0
    variable_rate: bool = False  # frame intervals drawn between 1/30 and 1/20 s, as phones record in dim light
    rotation: int = 0  # degrees counter-clockwise the stored frames are turned to be shown (a display matrix)
    codec: str = "h264"  # h264, hevc (10-bit) or vp9
    audio: bool = True
    region: bool = False  # the user gives the signer's region (--region); otherwise the model's framing

    def container(self) -> tuple[str, str, str, dict[str, str], str]:
        """(FFmpeg encoder, container, pixel format, options, file suffix)."""
        if self.codec == "hevc":
            return "libx265", "mp4", "yuv420p10le", {"preset": "ultrafast", "crf": "20",
                                                     "x265-params": "log-level=none"}, ".mp4"
        if self.codec == "vp9":
            return "libvpx-vp9", "webm", "yuv420p", {"deadline": "realtime", "cpu-used": "8", "crf": "24",
                                                     "b": "0"}, ".webm"
        return "libx264", "mp4", "yuv420p", {"preset": "veryfast", "crf": "18"}, ".mp4"


KINDS = {kind.name: kind for kind in (
    RecordedKind("h264-aac", "H.264 1080x1080, 30 fps, AAC audio"),
    RecordedKind("hevc-10bit", "HEVC 10-bit 1080x1080, 30 fps, AAC audio", codec="hevc"),
    RecordedKind("rotated-90", "stored turned, a display matrix of 90 degrees", fps=25.0, rotation=90),
    RecordedKind("rotated-180", "stored upside down, a display matrix of 180 degrees", fps=25.0, rotation=180),
    RecordedKind("rotated-270", "stored turned, a display matrix of 270 degrees", fps=25.0, rotation=270),
    RecordedKind("fps-60", "60 fps", fps=60.0),
    RecordedKind("variable-rate", "a variable frame rate, 20 to 30 fps", variable_rate=True),
    RecordedKind("portrait-half", "portrait 1080x1920, the signer at half its height", canvas=(1080, 1920),
                 fill=0.5),
    # A square signer is at most as wide as a portrait picture: 56 % of its height.
    RecordedKind("portrait-full", "portrait 1080x1920, the signer as wide as the picture", canvas=(1080, 1920),
                 fill=1080 / 1920),
    RecordedKind("landscape-full", "landscape 1920x1080, the signer at full height", canvas=(1920, 1080)),
    RecordedKind("landscape-half", "landscape 1920x1080, the signer at half height (--region)",
                 canvas=(1920, 1080), fill=0.5, region=True),
    RecordedKind("webcam", "a 1280x720 webcam recording in the browser: VP9 WebM, Opus audio",
                 canvas=(1280, 720), codec="vp9"),
    RecordedKind("phone", "a phone's portrait video: stored landscape with a display matrix of 270 degrees, "
                          "variable rate, the signer at half height", canvas=(1080, 1920), fill=0.5,
                 variable_rate=True, rotation=270),
)}


def _even(value: float) -> int:
    return max(2, 2 * round(value / 2))


@dataclass(frozen=True)
class Recording:
    path: Path
    options: FramingOptions  # what the user asks for with this video
    frames: int
    size: tuple[int, int]  # (width, height) as stored


def frame_times(kind: RecordedKind, duration: float, seed: int = 0) -> list[float]:
    """When the camera took each frame of a recording lasting ``duration`` seconds."""
    if not kind.variable_rate:
        return [index / kind.fps for index in range(int(np.ceil(duration * kind.fps - 1e-9)))]
    rng = np.random.default_rng(seed)
    times = [0.0]
    while (following := times[-1] + rng.uniform(1 / 30, 1 / 20)) < duration:
        times.append(round(following, 3))
    return times


def _background(clip: np.ndarray, width: int, height: int, seed: int) -> np.ndarray:
    """The clip's border colour over the whole picture, lighter towards the top, with a camera's noise."""
    border = np.concatenate([clip[0, 0], clip[0, -1], clip[0, :, 0], clip[0, :, -1]]).reshape(-1, 3)
    colour = np.median(border, axis=0)
    shade = np.linspace(1.06, 0.94, height)[:, None, None]
    noise = np.random.default_rng(seed).normal(0, 1.5, (height, width, 3))
    return np.clip(colour * shade + noise, 0, 255).astype(np.uint8)


def _pictures(clip: np.ndarray, kind: RecordedKind, times: list[float], scale: float, seed: int
              ) -> tuple[Iterator[np.ndarray], Region]:
    """The upright pictures at ``times``, and where the clip lies in them."""
    width, height = (_even(side * scale) for side in kind.canvas)
    side = _even(kind.fill * height)
    left, top = (width - side) // 2, (height - side) // 2
    region = Region(max(0, left), top, min(side, width), side)
    background = _background(clip, width, height, seed)
    # Every clip frame scaled at once (one resize call a frame cost ten times more): at 1080p, 100 frames of
    # 1080x1080 are 350 MB.
    scaled = resize_frames(clip, side, side)[:, :, max(0, -left):max(0, -left) + region.width]

    def pictures() -> Iterator[np.ndarray]:
        for time in times:
            picture = background.copy()
            picture[top:top + side, region.x:region.x + region.width] = scaled[min(len(clip) - 1,
                                                                                  round(time * CLIP_FPS))]
            yield picture

    return pictures(), region


def record(clip_path: Path, kind: RecordedKind, out: Path, scale: float = 1.0, seed: int = 0) -> Recording:
    """``clip_path`` (a prepared clip) recorded as ``kind`` into ``out`` (its suffix is the kind's)."""
    clip = read_frames(clip_path)
    times = frame_times(kind, len(clip) / CLIP_FPS, seed)
    pictures, region = _pictures(clip, kind, times, scale, seed)
    turns = -(kind.rotation // 90)
    stored = (np.ascontiguousarray(np.rot90(picture, k=turns)) for picture in pictures)
    encoder, container, pixel_format, options, suffix = kind.container()
    out = out.with_suffix(suffix)
    count = encode_video(out, stored, kind.fps, encoder, container, options, pixel_format=pixel_format,
                         timestamps=times if kind.variable_rate else None,
                         extras=StreamExtras(kind.rotation, audio=kind.audio))
    width, height = (_even(side * scale) for side in kind.canvas)
    size = (height, width) if kind.rotation in (90, 270) else (width, height)
    return Recording(out, FramingOptions(region=region if kind.region else None), count, size)

