"""The served video decoders: DALI's and PyAV's give the same frames, and each bad upload its own error."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import pytest

from qslr.deploy.served_limits import ClipTooLongError, ServedLimits
from qslr.deploy.served_video import DaliClipDecoder, DecodedClip, clip_decoder
from qslr.deploy.serving.triton_repository import resolve_video_decoder
from qslr.pipelines.video_io import TruncatedVideoError, VideoDecodeError, encode_video, read_video, write_vp9

pytest.importorskip("nvidia.dali", reason="the DALI decoder needs nvidia-dali")

ONE_LEVEL = 1  # DALI's and QSLR's BT.601 conversions differ by at most one level on a few pixels
SIZE = 72


def _h264_mp4(path: Path, frames: np.ndarray, fps: int = 25) -> Path:
    encode_video(path, frames, fps, "libx264", "mp4", {"crf": "10"})
    return path


@pytest.fixture(scope="module")
def decoders():
    limits = ServedLimits(max_frames=180)
    return clip_decoder("pyav", SIZE, SIZE, limits), clip_decoder("dali", SIZE, SIZE, limits)


def test_dali_and_pyav_decode_the_same_frames(decoders, videos):
    pyav, dali = decoders
    uploads = [Path(v).read_bytes() for v in videos[:6]]
    for video, a, b in zip(videos, pyav.decode(uploads), dali.decode(uploads), strict=False):
        assert isinstance(a, DecodedClip) and isinstance(b, DecodedClip), video
        frames, fps = read_video(video)
        assert a.frames.shape == b.frames.shape == frames.shape
        assert np.abs(a.frames.astype(int) - b.frames).max() <= ONE_LEVEL
        assert np.array_equal(a.frames, frames)  # PyAV's path is read_frames itself
        assert a.fps == b.fps == fps > 0


def test_every_bad_upload_gets_its_own_error_and_the_rest_their_frames(decoders, videos, tmp_path):
    pyav, dali = decoders
    good = [Path(v).read_bytes() for v in videos[:3]]
    long_video = tmp_path / "long.webm"
    frames, _ = read_video(videos[0])
    write_vp9(long_video, np.concatenate([frames] * (181 // len(frames) + 1)), 25)
    batch = [good[0], b"not a video" * 20, good[1], good[2][: len(good[2]) // 2], long_video.read_bytes(), good[2]]
    for decoder in (pyav, dali):
        results = decoder.decode(batch)
        assert [type(r) for r in results] == [DecodedClip, VideoDecodeError, DecodedClip, TruncatedVideoError,
                                              ClipTooLongError, DecodedClip], decoder.name
        assert "video too long" in str(results[4]) and "truncated or incomplete" in str(results[3])
        for result, upload in zip((results[0], results[2], results[5]), (good[0], good[1], good[2]), strict=True):
            assert np.abs(result.frames.astype(int) - read_video(upload)[0]).max() <= ONE_LEVEL


def test_a_codec_dali_cannot_decode_on_the_cpu_goes_to_pyav(decoders, videos, tmp_path):
    pyav, dali = decoders
    frames, _ = read_video(videos[0])
    h264 = _h264_mp4(tmp_path / "phone.mp4", frames).read_bytes()
    webm = Path(videos[1]).read_bytes()
    (a_h264, a_webm), (b_h264, b_webm) = pyav.decode([h264, webm]), dali.decode([h264, webm])
    assert np.array_equal(a_h264.frames, b_h264.frames)  # the same PyAV decoding for both
    assert len(b_h264.frames) == len(frames) and b_h264.fps == 25
    assert np.abs(a_webm.frames.astype(int) - b_webm.frames).max() <= ONE_LEVEL


def test_frames_of_another_size_are_resized_to_the_models(decoders, videos, tmp_path):
    pyav, dali = decoders
    frames, _ = read_video(videos[0])
    big = np.repeat(np.repeat(frames, 2, axis=1), 2, axis=2)
    path = tmp_path / "big.webm"
    write_vp9(path, big, 25)
    (a,), (b,) = pyav.decode([path.read_bytes()]), dali.decode([path.read_bytes()])
    assert a.frames.shape == b.frames.shape == (len(frames), SIZE, SIZE, 3)
    assert np.abs(a.frames.astype(int) - b.frames).max() <= ONE_LEVEL


def test_a_batch_larger_than_the_pipeline_is_decoded_in_runs(videos):
    dali = DaliClipDecoder(SIZE, SIZE, ServedLimits(max_frames=180, max_batch=2))
    uploads = [Path(v).read_bytes() for v in videos[:5]]
    results = dali.decode(uploads)
    assert [len(r.frames) for r in results] == [len(read_video(u)[0]) for u in uploads]


def test_the_decoder_choice_is_checked():
    assert resolve_video_decoder(None) == "dali"  # DALI is installed here
    assert resolve_video_decoder("pyav") == "pyav"
    with pytest.raises(ValueError, match="unknown video decoder 'ffmpeg'"):
        resolve_video_decoder("ffmpeg")
    with pytest.raises(ValueError, match="unknown video decoder"):
        clip_decoder("ffmpeg", SIZE, SIZE, ServedLimits())


def _mjpeg_avi_with_a_broken_frame(frames: np.ndarray, broken: int) -> bytes:
    """An AVI whose container is intact but whose frame ``broken`` holds no JPEG data: the demuxer reads
    it, the decoder fails on it, so DALI fails the whole batch it is in."""
    buffer = io.BytesIO()
    encode_video(buffer, frames, 25, "mjpeg", "avi", pixel_format="yuvj420p")
    data = bytearray(buffer.getvalue())
    with av.open(io.BytesIO(bytes(data))) as container:
        position, size = [(p.pos, p.size) for p in container.demux(video=0) if p.size][broken]
    start = bytes(data).index(b"\xff\xd8", position)  # the JPEG's start-of-image marker
    data[start:start + size] = bytes(size)
    return bytes(data)


def test_a_video_that_fails_dalis_batch_fails_alone(decoders, videos):
    _, dali = decoders
    frames, _ = read_video(videos[0])
    broken = _mjpeg_avi_with_a_broken_frame(frames, broken=10)
    good = [Path(v).read_bytes() for v in videos[1:3]]
    results = dali.decode([good[0], broken, good[1]])
    assert isinstance(results[1], TruncatedVideoError) and "after 10 frames" in str(results[1])
    for result, upload in zip((results[0], results[2]), good, strict=True):
        assert isinstance(result, DecodedClip)
        assert np.abs(result.frames.astype(int) - read_video(upload)[0]).max() <= ONE_LEVEL


def test_dali_decodes_again_after_a_failed_batch(decoders, videos, monkeypatch):
    _, dali = decoders
    frames, _ = read_video(videos[0])
    assert isinstance(dali.decode([_mjpeg_avi_with_a_broken_frame(frames, broken=3)])[0], TruncatedVideoError)

    def no_pyav(videos, probed=False):
        raise AssertionError(f"{len(videos)} videos went to PyAV: DALI did not decode them")

    monkeypatch.setattr(dali.fallback, "decode", no_pyav)
    good = [Path(v).read_bytes() for v in videos[:3]]
    assert all(isinstance(r, DecodedClip) for r in dali.decode(good))


def test_a_long_upload_is_refused_before_it_is_decoded(decoders, videos, tmp_path, monkeypatch):
    frames, _ = read_video(videos[0])
    long_video = tmp_path / "long.webm"
    write_vp9(long_video, np.concatenate([frames] * (181 // len(frames) + 1)), 25)

    def no_decoding(video):
        raise AssertionError("the long upload was decoded")

    pyav, dali = decoders
    monkeypatch.setattr(pyav, "decode_one", no_decoding)
    monkeypatch.setattr(dali.fallback, "decode_one", no_decoding)
    monkeypatch.setattr(dali.pipeline, "decode", no_decoding)
    for decoder in decoders:
        (result,) = decoder.decode([long_video.read_bytes()])
        assert isinstance(result, ClipTooLongError) and "video too long" in str(result), decoder.name
