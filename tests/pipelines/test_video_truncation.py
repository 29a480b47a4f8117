"""A video cut short is refused as truncated, in every container the project reads, not decoded in part."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from qslr.pipelines.video_io import (
    TruncatedVideoError,
    VideoDecodeError,
    encode_video,
    probe_video,
    read_frames,
    write_vp9,
)

FRAMES = 60


def _frames():
    # Moving content, so that every frame costs bytes and a cut loses whole frames.
    rng = np.random.default_rng(0)
    for i in range(FRAMES):
        frame = np.full((48, 64, 3), 40, np.uint8)
        frame[:, (i % 14) * 4:(i % 14) * 4 + 8] = rng.integers(0, 255, (48, 8, 3), dtype=np.uint8)
        yield frame


def _write_with_pyav(path: Path, container_format: str, codec: str, pixel_format: str) -> None:
    encode_video(path, _frames(), 25, codec, container_format, pixel_format=pixel_format)


@pytest.fixture(scope="module", params=["webm-vp9", "mkv-vp9", "avi-mjpeg"])
def video(request, tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("cut") / f"whole.{request.param.split('-')[0]}"
    if request.param == "webm-vp9":
        write_vp9(path, _frames(), 25)
    elif request.param == "mkv-vp9":
        _write_with_pyav(path, "matroska", "libvpx-vp9", "yuv420p")
    else:
        _write_with_pyav(path, "avi", "mjpeg", "yuvj420p")
    return path.read_bytes()


# Decoding, and reading the container without decoding (what the DALI decoder checks first), refuse the same cuts.
READERS = pytest.mark.parametrize("read", [read_frames, probe_video], ids=["decode", "probe"])


def test_the_whole_video_decodes(video):
    assert len(read_frames(video)) == FRAMES
    assert probe_video(video).packets == FRAMES


@READERS
@pytest.mark.parametrize("share", [0.97, 0.8, 0.5, 1 / 7])
def test_a_cut_video_is_refused_and_says_how_much_was_readable(video, share, read):
    with pytest.raises(VideoDecodeError) as error:
        read(video[: int(len(video) * share)])
    message = str(error.value)
    if isinstance(error.value, TruncatedVideoError):
        assert "truncated or incomplete" in message and "could be read" in message
    else:  # cut inside the headers: nothing could be read at all
        assert "cannot decode video" in message


@READERS
def test_most_cuts_are_recognised_as_truncation_rather_than_garbage(video, read):
    truncated = 0
    for share in (0.97, 0.8, 0.5):
        with pytest.raises(VideoDecodeError) as error:
            read(video[: int(len(video) * share)])
        truncated += isinstance(error.value, TruncatedVideoError)
    assert truncated == 3


def test_b_frames_do_not_make_a_whole_video_look_cut(tmp_path):
    """H.264 with B-frames (x264's default) in Matroska: packets come in decoding order, so the last packet
    is not the last frame shown, and only the whole stream tells where the video ends."""
    path = tmp_path / "phone.mkv"
    shown = FRAMES - 1  # x264 then ends on B-frames: the last packet decoded is not the last one shown
    encode_video(path, list(_frames())[:shown], 25, "libx264", "matroska")
    data = path.read_bytes()
    with av.open(str(path)) as container:
        timestamps = [p.pts for p in container.demux(video=0) if p.size]
    assert timestamps[-1] < max(timestamps)
    assert probe_video(data).packets == len(read_frames(data)) == shown
    with pytest.raises(TruncatedVideoError):
        probe_video(data[: int(len(data) * 0.8)])


def _with_a_pause(path: Path, pause_s: float) -> None:
    """60 frames at 25 fps whose timestamps jump by ``pause_s`` after frame 30: what a damaged stretch the
    demuxer skipped looks like, or, short, a variable-rate recording's slow moment."""
    frames = list(_frames())
    starts = [index / 25 + (pause_s if index >= 30 else 0.0) for index in range(len(frames))]
    encode_video(path, frames, 25, "libvpx-vp9", "matroska", timestamps=starts)


@pytest.mark.parametrize("read", [probe_video, read_frames])
def test_frames_that_stop_for_over_a_second_are_refused_as_corrupt_midway(tmp_path, read):
    paused = tmp_path / "paused.mkv"
    _with_a_pause(paused, 1.5)
    with pytest.raises(TruncatedVideoError, match=r"paused\.mkv: the video is corrupt midway: it has no frames "
                                                  r"from 1\.20 s to 2\.70 s \(30 frames before it could be read\)"):
        read(paused)
    slow = tmp_path / "slow.mkv"
    _with_a_pause(slow, 0.6)  # a variable-rate recording's slow moment is not damage
    assert len(read_frames(slow)) == FRAMES and probe_video(slow).packets == FRAMES
