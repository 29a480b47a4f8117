"""Per-clip augmentation plans, shared by the DALI pipeline and the reference loader.

One plan per clip and epoch fixes everything random: which frames in which order (temporal rescale and
the replicate padding), the crop offset, the flip and the photometric gain and offset. Both loaders execute
the same plan, so they give the same tensors; the plan depends only on (seed, epoch, sample index), never
on worker scheduling.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qslr.pipelines.temporal_padding import VAC_KERNELS, padded_order


@dataclass(frozen=True)
class ClipSettings:
    crop_size: int = 224
    flip_prob: float = 0.5
    temporal_rescale: float = 0.2
    min_frames: int = 32
    max_frames: int = 230
    kernels: tuple[str, ...] = VAC_KERNELS
    # Per clip, on the normalised [-1, 1] values: x * U(1 - c, 1 + c) + U(-b, b), not clamped (one affine map,
    # which DALI folds into its normalisation). Not in the original (0 keeps its augmentation); it stands in
    # for signers whose skin, clothes and lighting contrast differently from every training signer's.
    contrast_jitter: float = 0.0
    brightness_jitter: float = 0.0


@dataclass(frozen=True)
class ClipPlan:
    order: np.ndarray  # int32 frame indices to gather, padding included: its length is the clip's length
    crop_y: int
    crop_x: int
    flip: bool
    gain: float = 1.0
    offset: float = 0.0

    @property
    def length(self) -> int:
        return len(self.order)


def rescaled_indices(num_frames: int, settings: ClipSettings, rng: np.random.Generator) -> list[int]:
    """The original's TemporalRescale: L' = int(L * U(1 - r, 1 + r)), clamped, rounded up to a multiple of 4;
    distinct frames when shrinking, frames drawn with replacement when stretching; always in time order."""
    if settings.temporal_rescale <= 0:
        return list(range(num_frames))
    target = int(num_frames * rng.uniform(1 - settings.temporal_rescale, 1 + settings.temporal_rescale))
    target = min(max(target, settings.min_frames), settings.max_frames)
    target = -(-target // 4) * 4
    if target <= num_frames:
        picked = rng.choice(num_frames, size=target, replace=False)
    else:
        picked = rng.integers(0, num_frames, size=target)
    return sorted(int(i) for i in picked)


def plan_clip(num_frames: int, height: int, width: int, settings: ClipSettings, train: bool,
              rng: np.random.Generator) -> ClipPlan:
    crop = settings.crop_size
    if height < crop or width < crop:
        raise ValueError(f"frames of {width}x{height} are smaller than the {crop}x{crop} crop")
    if train:
        indices = rescaled_indices(num_frames, settings, rng)
        crop_y, crop_x = int(rng.integers(0, height - crop + 1)), int(rng.integers(0, width - crop + 1))
        flip = bool(rng.random() < settings.flip_prob)
        # Drawn last and only when asked for, so that plans without it stay those of earlier releases.
        gain = float(rng.uniform(1 - settings.contrast_jitter, 1 + settings.contrast_jitter)) \
            if settings.contrast_jitter > 0 else 1.0
        offset = float(rng.uniform(-settings.brightness_jitter, settings.brightness_jitter)) \
            if settings.brightness_jitter > 0 else 0.0
    else:
        indices = list(range(num_frames))
        crop_y, crop_x, flip = (height - crop) // 2, (width - crop) // 2, False
        gain, offset = 1.0, 0.0
    return ClipPlan(np.asarray(padded_order(indices, settings.kernels), dtype=np.int32), crop_y, crop_x, flip,
                    gain, offset)


def clip_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, index])


# Pixels v in 0..255 become (v - PIXEL_OFFSET) / PIXEL_SCALE, in [-1, 1], as the original maps them (ImageNet's
# mean and deviation are not used). Both loaders take them from here; checkpoints record them (InputSpec), and
# the served model reads them from there.
PIXEL_OFFSET = 127.5
PIXEL_SCALE = 127.5


def apply_plan(frames: np.ndarray, plan: ClipPlan, crop: int) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (T', 3, crop, crop) float32 in [-1, 1]: the reference implementation."""
    clip = frames[plan.order, plan.crop_y:plan.crop_y + crop, plan.crop_x:plan.crop_x + crop]
    if plan.flip:
        clip = clip[:, :, ::-1]
    clip = (np.ascontiguousarray(clip.transpose(0, 3, 1, 2), dtype=np.float32) - PIXEL_OFFSET) / PIXEL_SCALE
    if plan.gain != 1.0 or plan.offset != 0.0:
        clip = clip * np.float32(plan.gain) + np.float32(plan.offset)
    return clip

