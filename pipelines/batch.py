"""The batch every loader yields and the model consumes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch


class UnknownGlossError(ValueError):
    """An annotation holds a gloss that is not in the vocabulary; the message names the video."""


@dataclass
class Batch:
    videos: torch.Tensor  # (B, T, 3, H, W) float32 in [-1, 1]; zero past each sample's length
    lengths: torch.Tensor  # (B,) int64 frames per sample, replicate padding included; non-increasing
    targets: torch.Tensor  # (sum of target_lengths,) int64 gloss ids, concatenated (CTC's 1-D form)
    target_lengths: torch.Tensor  # (B,) int64
    ids: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def frames(self) -> int:
        return int(self.lengths.sum())


def encode_glosses(video_id: str, glosses: Sequence[str], vocab: Mapping[str, int]) -> list[int]:
    unknown = [g for g in glosses if g not in vocab]
    if unknown:
        raise UnknownGlossError(f"video {video_id}: gloss(es) not in the vocabulary: {', '.join(unknown)}")
    return [vocab[g] for g in glosses]


def collate(clips: Sequence[torch.Tensor], targets: Sequence[Sequence[int]], ids: Sequence[str]) -> Batch:
    """Pad clips (T_i, 3, H, W) with zeros to the longest and sort by length, longest first."""
    order = sorted(range(len(clips)), key=lambda i: -len(clips[i]))
    longest = len(clips[order[0]])
    videos = clips[order[0]].new_zeros((len(clips), longest, *clips[order[0]].shape[1:]))
    for row, i in enumerate(order):
        videos[row, : len(clips[i])] = clips[i]
    return Batch(
        videos=videos,
        lengths=torch.tensor([len(clips[i]) for i in order], dtype=torch.int64),
        targets=torch.tensor([g for i in order for g in targets[i]], dtype=torch.int64),
        target_lengths=torch.tensor([len(targets[i]) for i in order], dtype=torch.int64),
        ids=[ids[i] for i in order],
    )
