"""One bad upload never fails another, whatever it raises: seeded mutants of valid videos (bit flips at several
densities, overwritten, deleted and cut byte ranges, damaged headers, another container's header) decoded in
batches with valid uploads by both served decoders. Every valid upload gets exactly its own frames; every mutant
gets frames or its own error, and decoding never raises."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from qslr.deploy.served_limits import ServedLimits
from qslr.deploy.served_video import DecodedClip, clip_decoder, isolated
from qslr.pipelines.video_io import VideoDecodeError
from qslr.tools.damaged_videos import mutant_pool

SIZE = 72
# Where DALI fails a whole batch, its videos are decoded by PyAV, whose BT.601 conversion differs by one level.
ONE_LEVEL = 1


@pytest.mark.parametrize("name", ["pyav", "dali"])
def test_mutants_in_batches_with_valid_uploads_fail_alone(name, upload_variants, escaped_mutants, videos):
    if name == "dali":
        pytest.importorskip("nvidia.dali", reason="the DALI decoder needs nvidia-dali")
    decoder = clip_decoder(name, SIZE, SIZE, ServedLimits(max_frames=400, max_batch=8))
    valid = [Path(v).read_bytes() for v in videos[:3]]
    expected = [decoder.decode([v])[0] for v in valid]
    assert all(isinstance(clip, DecodedClip) for clip in expected)
    pool = [m.data for m in mutant_pool(upload_variants, seed=24)] + [p.read_bytes() for p in escaped_mutants]
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
