"""Clip plans: the original's temporal rescale, crops, flips and padding, drawn reproducibly."""

from __future__ import annotations

import numpy as np
import pytest

from qslr.pipelines.augmentation import ClipPlan, ClipSettings, apply_plan, clip_rng, plan_clip, rescaled_indices
from qslr.pipelines.temporal_padding import padded_length

SETTINGS = ClipSettings(crop_size=224, flip_prob=0.5, temporal_rescale=0.2, min_frames=32, max_frames=230)


@pytest.mark.parametrize("num_frames", [10, 27, 100, 140, 299])
def test_temporal_rescale_bounds(num_frames):
    for seed in range(50):
        indices = rescaled_indices(num_frames, SETTINGS, np.random.default_rng(seed))
        assert len(indices) % 4 == 0 and 32 <= len(indices) <= 232
        assert indices == sorted(indices) and all(0 <= i < num_frames for i in indices)
        if len(indices) <= num_frames:
            assert len(set(indices)) == len(indices)  # shrinking never repeats a frame


def test_train_plans_vary_and_eval_plans_are_centred():
    plans = [plan_clip(100, 256, 256, SETTINGS, True, clip_rng(0, 0, i)) for i in range(200)]
    assert {p.crop_y for p in plans} == set(range(33)) and {p.crop_x for p in plans} == set(range(33))
    assert 0.4 < np.mean([p.flip for p in plans]) < 0.6
    centre = plan_clip(100, 256, 256, SETTINGS, False, clip_rng(0, 0, 0))
    assert (centre.crop_y, centre.crop_x, centre.flip) == (16, 16, False)
    assert centre.order.tolist() == [0] * 6 + list(range(100)) + [99] * (padded_length(100, SETTINGS.kernels) - 106)


def test_plans_depend_only_on_seed_epoch_and_index():
    first = plan_clip(90, 256, 256, SETTINGS, True, clip_rng(3, 1, 7))
    again = plan_clip(90, 256, 256, SETTINGS, True, clip_rng(3, 1, 7))
    other = plan_clip(90, 256, 256, SETTINGS, True, clip_rng(3, 2, 7))
    assert np.array_equal(first.order, again.order)
    assert (first.crop_y, first.crop_x, first.flip) == (again.crop_y, again.crop_x, again.flip)
    assert not np.array_equal(first.order, other.order)


def test_apply_plan_crops_flips_and_normalises():
    frames = np.arange(3 * 6 * 8 * 3, dtype=np.uint8).reshape(3, 6, 8, 3)
    settings = ClipSettings(crop_size=4, kernels=("K1",))
    plan = plan_clip(3, 6, 8, settings, False, clip_rng(0, 0, 0))
    clip = apply_plan(frames, plan, 4)
    assert clip.shape == (3, 3, 4, 4) and clip.dtype == np.float32
    expected = frames[:, 1:5, 2:6].transpose(0, 3, 1, 2) / 127.5 - 1
    np.testing.assert_allclose(clip, expected, atol=1e-6)
    flipped = apply_plan(frames, type(plan)(plan.order, plan.crop_y, plan.crop_x, True), 4)
    np.testing.assert_allclose(flipped, expected[..., ::-1], atol=1e-6)


def test_photometric_jitter_is_drawn_within_bounds_after_everything_else():
    jittered = ClipSettings(crop_size=224, contrast_jitter=0.3, brightness_jitter=0.2)
    plans = [plan_clip(100, 256, 256, jittered, True, clip_rng(0, 0, i)) for i in range(200)]
    gains, offsets = np.array([p.gain for p in plans]), np.array([p.offset for p in plans])
    assert gains.min() >= 0.7 and gains.max() <= 1.3 and gains.max() - gains.min() > 0.5
    assert offsets.min() >= -0.2 and offsets.max() <= 0.2 and offsets.max() - offsets.min() > 0.3
    # The frames, crop and flip are those the same clip gets without the jitter, so turning it on changes
    # nothing else of a run.
    for i, plan in enumerate(plans[:20]):
        plain = plan_clip(100, 256, 256, ClipSettings(crop_size=224), True, clip_rng(0, 0, i))
        assert np.array_equal(plan.order, plain.order)
        assert (plan.crop_y, plan.crop_x, plan.flip) == (plain.crop_y, plain.crop_x, plain.flip)
        assert (plain.gain, plain.offset) == (1.0, 0.0)
    centre = plan_clip(100, 256, 256, jittered, False, clip_rng(0, 0, 0))
    assert (centre.gain, centre.offset) == (1.0, 0.0)


def test_apply_plan_scales_and_shifts():
    frames = np.array([0, 64, 128, 191, 255], dtype=np.uint8).reshape(5, 1, 1, 1).repeat(3, axis=3)
    plan = ClipPlan(np.arange(5, dtype=np.int32), 0, 0, False, gain=1.25, offset=-0.1)
    clip = apply_plan(frames, plan, 1)[:, 0, 0, 0]
    # Normalised values -1, -0.498, 0.004, 0.498, 1: times 1.25 minus 0.1.
    np.testing.assert_allclose(clip, [-1.35, -0.72255, -0.09510, 0.52255, 1.15], atol=1e-4)


def test_frames_smaller_than_the_crop_are_refused():
    with pytest.raises(ValueError, match="smaller than the 224x224 crop"):
        plan_clip(10, 200, 256, SETTINGS, False, clip_rng(0, 0, 0))
