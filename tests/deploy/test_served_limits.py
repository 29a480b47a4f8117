"""The served limits and the padding that brings a short clip up to them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qslr.deploy.export.tensorrt_engine import ShapeRange
from qslr.deploy.served import example_inputs, served_from_checkpoint
from qslr.deploy.served_limits import ClipTooLongError, ServedLimits, pad_to_minimum
from qslr.deploy.serving.ragged_batch import check_clip, pad_clips


def test_limits_validate_and_name_a_long_clip():
    with pytest.raises(ValueError, match="min_frames <= max_frames"):
        ServedLimits(min_frames=50, max_frames=40)
    with pytest.raises(ValueError, match="max_batch"):
        ServedLimits(max_batch=0)
    limits = ServedLimits(min_frames=8, max_frames=100)
    limits.check_length(100)
    with pytest.raises(ClipTooLongError, match="video too long: 101 frames, the served maximum is 100"):
        limits.check_length(101)
    frames = np.zeros((101, 4, 4, 3), np.uint8)
    assert check_clip(frames, 101, 4, 4, limits) == "video too long: 101 frames, the served maximum is 100"
    assert check_clip(frames[:100], 100, 4, 4, limits) is None


def test_padding_reaches_the_minimum_and_keeps_longer_clips():
    clip = np.arange(3 * 2 * 2 * 3, dtype=np.uint8).reshape(3, 2, 2, 3)
    padded = pad_to_minimum(clip, 8)
    assert padded.shape == (8, 2, 2, 3) and np.array_equal(padded[:3], clip) and not padded[3:].any()
    assert pad_to_minimum(clip, 2) is clip
    batch, lengths = pad_clips([clip, clip[:1]], min_frames=8)
    assert batch.shape[:2] == (2, 8) and lengths.tolist() == [3, 1]


def test_padding_a_short_clip_leaves_the_model_output_unchanged(checkpoint):
    served, _ = served_from_checkpoint(checkpoint)
    frames, _ = example_inputs(1, 5, 72, 72, seed=4)
    length = torch.tensor([5])
    padded = torch.from_numpy(pad_to_minimum(frames[0].numpy(), ServedLimits().min_frames))[None]
    with torch.no_grad():
        alone, alone_lengths = served(frames, length)
        together, together_lengths = served(padded, length)
    assert torch.equal(alone_lengths, together_lengths)
    torch.testing.assert_close(together[0, : int(alone_lengths[0])], alone[0], atol=1e-5, rtol=0)


def test_a_profile_covering_limits_runs_them_all():
    limits = ServedLimits(min_frames=10, max_frames=300, max_batch=6)
    shapes = ShapeRange.covering(limits, opt_batch=16, opt_time=1000)
    assert (shapes.min_batch, shapes.opt_batch, shapes.max_batch) == (1, 6, 6)
    assert (shapes.min_time, shapes.opt_time, shapes.max_time) == (10, 300, 300)
    assert shapes.uncovered(limits) == []
    assert len(ShapeRange(2, 2, 4, 20, 20, 200).uncovered(limits)) == 4


def test_shared_memory_for_full_batches():
    # Phoenix's frames at the default limits: one batch is 16 x 400 x 256 x 256 x 3 bytes, ~1.17 GiB.
    limits = ServedLimits()
    assert limits.batch_bytes(256, 256) == 1_258_291_200
    needed = limits.shared_memory_bytes(256, 256)
    assert 2 * limits.batch_bytes(256, 256) < needed < 3 * 2**30  # Docker's 1g is not enough, 3g is
    assert limits.shared_memory_bytes(256, 256, instances=2) - needed == 2 * limits.batch_bytes(256, 256)
