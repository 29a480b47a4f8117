"""The served video decoders: DALI's and PyAV's give the same frames, and each bad upload its own error."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from qslr.deploy.decoder_fallbacks import OVER_BUDGET, RUN_FAILED, UNAVAILABLE
from qslr.deploy.served_limits import ClipTooLongError, ServedLimits
from qslr.deploy.served_video import DaliClipDecoder, DecodedClip, clip_decoder
from qslr.deploy.serving.triton_repository import resolve_video_decoder
from qslr.pipelines import video_io
from qslr.pipelines.dali_video import VideoDecodePipeline, decoded_bytes
from qslr.pipelines.source_framing import SourceFraming
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


def test_a_video_that_fails_dalis_batch_fails_alone(videos):
    reports = []
    dali = DaliClipDecoder(SIZE, SIZE, ServedLimits(max_frames=180), report=reports.append)
    frames, _ = read_video(videos[0])
    broken = _mjpeg_avi_with_a_broken_frame(frames, broken=10)
    good = [Path(v).read_bytes() for v in videos[1:3]]
    for _ in range(2):
        results = dali.decode([good[0], broken, good[1]])
        assert isinstance(results[1], TruncatedVideoError) and "after 10 frames" in str(results[1])
        for result, upload in zip((results[0], results[2]), good, strict=True):
            assert isinstance(result, DecodedClip)
            assert np.abs(result.frames.astype(int) - read_video(upload)[0]).max() <= ONE_LEVEL
    # Every upload of the failed runs went to PyAV: counted, and said once with DALI's reason.
    assert dali.fallbacks.counts == {RUN_FAILED: 6}
    assert len(reports) == 1 and reports[0].startswith("dali video decoder: DALI failed a run as a whole"), reports
    assert "RuntimeError: " in reports[0] and "a run of 3" in reports[0] and reports[0].endswith("so far: 3")


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


def _decoded_bytes(upload: bytes) -> int:
    probe = video_io.probe_video(upload)
    return decoded_bytes(probe.packets, probe.height, probe.width)


def _resized_at_once(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """The resize as the served decoders made it before it took a video a chunk at a time: one interpolation over
    every frame of the video."""
    tensor = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    resized = F.interpolate(tensor, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    return resized.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


@pytest.mark.parametrize(("height", "width"), [(40, 40), (56, 100)])  # smaller than the corpus's 72x72, and wider
def test_the_cpu_decoder_gives_the_frames_of_one_run_and_one_resize_in_any_runs_and_chunks(videos, monkeypatch,
                                                                                            height, width):
    """The DALI CPU decoder's frames, bit for bit, whatever its budget splits a batch into and however many frames
    its resize takes at a time: those of the whole batch decoded in one DALI run and each video resized at once."""
    uploads = [Path(v).read_bytes() for v in videos]
    whole_batch = VideoDecodePipeline(len(uploads)).decode([np.frombuffer(u, np.uint8) for u in uploads])
    expected = [_resized_at_once(frames.numpy(), height, width) for frames in whole_batch]
    sizes = [_decoded_bytes(upload) for upload in uploads]
    # A model whose square source pictures were resized whole to its frame size (Phoenix's rule): no crop.
    dali = DaliClipDecoder(height, width, ServedLimits(max_frames=400), budget_bytes=2 * max(sizes),
                           source=SourceFraming(1.0))
    runs = []
    monkeypatch.setattr(dali.pipeline, "decode", lambda encoded, run=dali.pipeline.decode: runs.append(encoded) or
                        run(encoded))
    monkeypatch.setattr(video_io, "RESIZE_CHUNK_BYTES", 7 * 4 * 3 * 72 * 72)  # 7 frames at a time
    results = dali.decode(uploads)
    assert len(runs) >= 3 and max(map(len, runs)) >= 2  # several runs, of several videos
    assert all(sum(_decoded_bytes(encoded.tobytes()) for encoded in run) <= dali.budget_bytes for run in runs)
    assert dali.fallbacks.total == 0 and len(results) == len(expected) >= 8
    for result, frames in zip(results, expected, strict=True):
        assert len(frames) > 7 and np.array_equal(result.frames, frames)


def test_an_upload_over_the_budget_alone_goes_to_pyav_counted(decoders, videos, tmp_path):
    pyav, dali = decoders
    frames, _ = read_video(videos[0])
    big = tmp_path / "big.webm"
    write_vp9(big, np.repeat(np.repeat(frames, 2, axis=1), 2, axis=2), 25)
    uploads = [Path(videos[1]).read_bytes(), big.read_bytes(), Path(videos[2]).read_bytes()]
    sizes = [_decoded_bytes(upload) for upload in uploads]
    reports = []
    budgeted = DaliClipDecoder(SIZE, SIZE, ServedLimits(max_frames=180), budget_bytes=sizes[0] + sizes[2],
                               report=reports.append)
    assert sizes[1] > budgeted.budget_bytes
    results = budgeted.decode(uploads)
    assert np.array_equal(results[1].frames, pyav.decode([uploads[1]])[0].frames)
    for index in (0, 2):  # DALI's, in one run
        assert np.array_equal(results[index].frames, dali.decode([uploads[index]])[0].frames)
    assert budgeted.fallbacks.counts == {OVER_BUDGET: 1}
    assert len(reports) == 1 and "exceed the decoder's memory budget" in reports[0], reports


def test_a_dali_gpu_decoder_that_cannot_start_falls_back_says_so_once_and_counts(decoders, videos):
    """Where DALI cannot decode on the GPU asked for (none here; on a GPU machine, one past its last), the
    decoder still serves every upload, with PyAV's frames, and the server log says so once, then as the count
    passes ten."""
    pyav, _ = decoders
    reports = []
    gpu = DaliClipDecoder(SIZE, SIZE, ServedLimits(max_frames=180), device="gpu",
                          device_id=torch.cuda.device_count(), report=reports.append)
    assert gpu.pipeline is None and len(reports) == 1
    assert reports[0].startswith("dali-gpu video decoder: DALI could not start here, so PyAV decodes every upload (")
    assert "NVIDIA_DRIVER_CAPABILITIES to include video" in reports[0] and "\n" not in reports[0]
    uploads = [Path(v).read_bytes() for v in videos[:6]]
    expected = pyav.decode(uploads)
    for batch in (slice(0, 4), slice(4, 6), slice(0, 6)):
        for got, want in zip(gpu.decode(uploads[batch]), expected[batch], strict=True):
            assert np.array_equal(got.frames, want.frames) and got.fps == want.fps
    assert gpu.fallbacks.counts == {UNAVAILABLE: 12}
    assert len(reports) == 2 and reports[1].endswith("PyAV decodes every upload: 12"), reports
