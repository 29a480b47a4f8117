"""One bad upload never fails another, whatever it raises: seeded mutants of valid videos (bit flips at several
densities, overwritten, deleted and cut byte ranges, damaged headers, another container's header) decoded in
batches with valid uploads by both served decoders. Every valid upload gets exactly its own frames; every mutant
gets frames or its own error, and decoding never raises."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import av
import numpy as np
import pytest

from qslr.deploy.serving.served_limits import ServedLimits
from qslr.deploy.serving.served_video import DecodedClip, clip_decoder, isolated
from qslr.pipelines.video_io import VideoDecodeError

SIZE = 72
# Where DALI fails a whole batch, its videos are decoded by PyAV, whose BT.601 conversion differs by one level.
ONE_LEVEL = 1


def _container(frames: np.ndarray, fmt: str, codec: str) -> bytes:
    import io

    buffer = io.BytesIO()
    with av.open(buffer, "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return buffer.getvalue()


def mutants(data: bytes, rng: random.Random, others: list[bytes]) -> list[bytes]:
    """Damaged copies of ``data``, of each kind the issue lists."""
    out = []
    for density in (1e-4, 1e-3, 1e-2):  # bit flips
        damaged = bytearray(data)
        for _ in range(max(1, int(len(data) * 8 * density))):
            position = rng.randrange(len(damaged))
            damaged[position] ^= 1 << rng.randrange(8)
        out.append(bytes(damaged))
    start = rng.randrange(len(data) // 2)
    out.append(data[:start] + bytes(rng.randrange(256) for _ in range(64)) + data[start + 64:])  # overwritten
    out.append(data[:start] + data[start + rng.randrange(16, 512):])  # a range deleted
    out.append(data[: rng.randrange(16, len(data))])  # cut short
    out.append(bytes(rng.randrange(256) for _ in range(48)) + data[48:])  # a damaged header
    other = rng.choice(others)
    out.append(other[:64] + data[64:])  # another container's header on this body
    return out


@pytest.fixture(scope="module")
def uploads(videos) -> list[bytes]:
    from qslr.pipelines.video_io import read_video

    frames, _ = read_video(videos[0])
    frames = frames[:24]
    return [Path(videos[0]).read_bytes(), _container(frames, "matroska", "libvpx-vp9"),
            _container(frames, "mp4", "libx264"), _container(frames, "avi", "mjpeg")]


@pytest.mark.parametrize("name", ["pyav", "dali"])
def test_mutants_in_batches_with_valid_uploads_fail_alone(name, uploads, videos):
    if name == "dali":
        pytest.importorskip("nvidia.dali", reason="the DALI decoder needs nvidia-dali")
    decoder = clip_decoder(name, SIZE, SIZE, ServedLimits(max_frames=400, max_batch=8))
    valid = [Path(v).read_bytes() for v in videos[:3]]
    expected = [decoder.decode([v])[0] for v in valid]
    assert all(isinstance(clip, DecodedClip) for clip in expected)
    rng = random.Random(24)
    pool = [m for data in uploads for m in mutants(data, rng, uploads)]
    rng.shuffle(pool)
    checked = refused = 0
    for start in range(0, len(pool), 4):
        # 4 mutants and 3 valid uploads a batch: over half the batch corrupt.
        batch = [*pool[start:start + 4], *valid]
        results = decoder.decode(batch)  # never raises
        assert len(results) == len(batch)
        for result in results[:-3]:
            assert isinstance(result, (DecodedClip, Exception))
            if isinstance(result, Exception):
                assert "\n" not in str(result) and str(result)
                refused += 1
        for got, want in zip(results[-3:], expected, strict=True):
            assert isinstance(got, DecodedClip) and got.frames.shape == want.frames.shape
            assert np.abs(got.frames.astype(int) - want.frames).max() <= ONE_LEVEL
            checked += 1
    assert checked >= 3 * 8 and refused >= len(pool) // 4  # many mutants were really refused, not all decoded


def test_an_unforeseen_error_stays_with_its_upload_with_its_traceback_in_the_log(caplog):
    def damaged_stream():
        return None.name  # what a damaged stream once made probe_video do (an AttributeError)

    with caplog.at_level(logging.WARNING):
        result = isolated(b"\x1aE\xdf\xa3 damaged", damaged_stream)
    assert isinstance(result, VideoDecodeError)
    assert str(result) == ("video bytes: cannot decode this video (AttributeError: 'NoneType' object has no "
                           "attribute 'name')")
    assert any(record.exc_info and record.exc_info[0] is AttributeError for record in caplog.records)
    missing = isolated("gone.webm", lambda: Path("/nonexistent/gone.webm").read_bytes())
    assert isinstance(missing, FileNotFoundError)
