"""Loaders for an experiment: the config's data section turned into clip settings and a loader."""

from __future__ import annotations

from qslr.pipelines.augmentation import ClipSettings
from qslr.pipelines.clip_source import ClipSource
from qslr.pipelines.epoch_plan import SINGLE_PROCESS, Sharding
from qslr.pipelines.loaders import build_loader
from qslr.train.config import ExperimentConfig


def clip_settings(config: ExperimentConfig) -> ClipSettings:
    data = config.data
    return ClipSettings(data.crop_size, data.flip_prob, data.temporal_rescale, data.min_frames, data.max_frames,
                        tuple(config.model.temporal.kernels), data.contrast_jitter, data.brightness_jitter)


def make_loader(config: ExperimentConfig, split: str, train: bool, device: str = "cpu",
                sharding: Sharding = SINGLE_PROCESS, vocab: dict[str, int] | None = None):
    data = config.data
    source = ClipSource.open(data.root, split, clip_settings(config), train=train, seed=config.train.seed, vocab=vocab)
    batch_size = data.batch_size if train else data.eval_batch_size
    # Like the original: shuffled, short last batch dropped in training; every video once otherwise.
    return build_loader(data.loader, source, batch_size, shuffle=train, drop_last=train, sharding=sharding,
                        workers=data.num_workers, device="cuda" if device.startswith("cuda") else "cpu",
                        device_id=int(device.split(":")[1]) if device.startswith("cuda:") else 0,
                        reuse_workers=train)
