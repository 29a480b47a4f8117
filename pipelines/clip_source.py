"""What both loaders read: one split of a prepared dataset, its targets, and each clip's plan per epoch."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qslr.pipelines.augmentation import ClipPlan, ClipSettings, apply_plan, clip_rng, plan_clip
from qslr.pipelines.batch import encode_glosses
from qslr.pipelines.prepared import PreparedDataset, VideoRecord
from qslr.pipelines.video_io import VideoDecodeError, read_frames


@dataclass
class ClipSource:
    root: Path
    split: str
    records: list[VideoRecord]
    targets: list[list[int]]
    settings: ClipSettings
    train: bool
    seed: int

    @classmethod
    def open(cls, root: str | Path, split: str, settings: ClipSettings, train: bool, seed: int = 0,
             vocab: Mapping[str, int] | None = None) -> ClipSource:
        """Read the split's records and encode every annotation up front, so a bad row fails before training."""
        dataset = PreparedDataset(root)
        vocab = vocab if vocab is not None else dataset.vocab
        records = dataset.records(split)
        targets = [encode_glosses(r.id, r.gloss_list(), vocab) for r in records]
        return cls(dataset.root, split, records, targets, settings, train, seed)

    def __len__(self) -> int:
        return len(self.records)

    def path(self, index: int) -> Path:
        return self.root / self.records[index].video

    def plan(self, index: int, epoch: int) -> ClipPlan:
        record = self.records[index]
        try:
            return plan_clip(record.num_frames, record.height, record.width, self.settings, self.train,
                             clip_rng(self.seed, epoch, index))
        except ValueError as exc:
            raise ValueError(f"video {record.id}: {exc}") from None

    def decode(self, index: int) -> np.ndarray:
        """All frames (T, H, W, 3) of one video, checked against what its row declares."""
        record = self.records[index]
        try:
            frames = read_frames(self.path(index))
        except (VideoDecodeError, FileNotFoundError, OSError) as exc:
            raise VideoDecodeError(f"video {record.id}: {exc}") from None
        if len(frames) != record.num_frames or frames.shape[1:3] != (record.height, record.width):
            raise VideoDecodeError(
                f"video {record.id}: {self.path(index)} holds {len(frames)} frames of "
                f"{frames.shape[2]}x{frames.shape[1]}, {self.split}.jsonl declares {record.num_frames} of "
                f"{record.width}x{record.height}")
        return frames

    def clip(self, index: int, epoch: int) -> np.ndarray:
        """The reference path: decode, then apply the epoch's plan on the CPU."""
        return apply_plan(self.decode(index), self.plan(index, epoch), self.settings.crop_size)

    def find_broken(self, indices: list[int]) -> VideoDecodeError | None:
        """The first of ``indices`` whose video does not decode to its declared frames (used to name the
        culprit when a batched decoder fails as a whole)."""
        for index in indices:
            try:
                self.decode(index)
            except VideoDecodeError as exc:
                return exc
        return None
