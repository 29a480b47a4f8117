"""A ResNet run on clips: its stages frame by frame, with modules spanning a clip's frames after some of them.

CorrNet's and CorrNet+'s encoders are this (`qslr.model.corrnet`, `qslr.model.corrnet_plus`); they differ in what
follows a stage. The ResNet is torchvision's: the originals write it with 3D convolutions of temporal size 1, the same
arithmetic frame by frame.

Batch independence. Clips arrive laid out clip by clip in a padded batch; a clip's frames are those before its
length, and what lies after them never reaches its output (`ClipMasks` says which frames are whose). In training the
stages run on the clips' own frames only, so that BatchNorm's batch statistics never see padding.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

STAGES = (2, 3, 4)  # the ResNet stages a clip module may follow
REDUCTION = 16  # the clip modules' bottlenecks keep a sixteenth of a stage's channels


@dataclass(frozen=True)
class ClipMasks:
    """Which of a padded batch's T steps are each clip's own, in the layouts the clip modules need."""

    valid: torch.Tensor  # (B, 1, T, 1, 1) in the features' dtype: 1 on a clip's own frames, 0 after them
    last: torch.Tensor  # (B, 1, T, 1, 1) bool: each clip's last frame
    frames: torch.Tensor  # (B*T,) bool: ``valid`` flattened clip by clip

    @classmethod
    def of(cls, lengths: torch.Tensor, time: int, dtype: torch.dtype) -> ClipMasks:
        steps = torch.arange(time, device=lengths.device)[None, :]
        lengths = lengths[:, None]
        valid = steps < lengths
        return cls(valid[:, None, :, None, None].to(dtype), (steps == lengths - 1)[:, None, :, None, None],
                   valid.reshape(-1))

    @property
    def steps(self) -> torch.Tensor:
        """(B, 1, T): ``valid`` for features pooled over space."""
        return self.valid[:, :, :, 0, 0]


class ClipResNet(nn.Module, ABC):
    """(N, 3, H, W) frames of clips laid out clip by clip (B clips of T frames, N = B*T) and the clips' lengths
    -> (N, out_dim) features (512 for ResNet-18); the features of frames past a clip's length are not its own and
    are left as they come. A subclass says what follows each of its ``stages`` (`after_stage`)."""

    clip_aware = True  # SLRModel and the served model hand it the clips' lengths

    def __init__(self, trunk: nn.Module, stages: Sequence[int]):
        super().__init__()
        if not stages or any(s not in STAGES for s in stages) or list(stages) != sorted(set(stages)):
            raise ValueError(f"correlation stages {list(stages)!r}: give increasing stages among 2, 3 and 4")
        self.trunk = trunk
        self.stages = tuple(stages)
        # A stage's channels are its last block's (128, 256 and 512 in ResNet-18; fewer in a narrowed one).
        self.channels = {stage: getattr(trunk, f"layer{stage}")[-1].conv2.out_channels for stage in STAGES}
        self.out_dim = self.channels[4]
        for stage in self.stages:
            if self.channels[stage] < REDUCTION:
                raise ValueError(f"correlation after stage {stage}: {self.channels[stage]} channels, fewer than the "
                                 f"{REDUCTION} its identification branch divides them by")

    @abstractmethod
    def after_stage(self, stage: int, clips: torch.Tensor, masks: ClipMasks) -> torch.Tensor:
        """The (B, C, T, H, W) features of the clips after ``stage`` and its clip modules."""

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if lengths is None:  # one clip of every frame given
            lengths = torch.full((1,), frames.shape[0], dtype=torch.long, device=frames.device)
        batch = lengths.shape[0]
        # Shapes by reshape with -1, not by dividing sizes: an exported graph keeps batch and time dynamic.
        time = frames.reshape(batch, -1, *frames.shape[1:]).shape[1]
        masks = ClipMasks.of(lengths.to(frames.device), time, frames.dtype)
        trunk = self.trunk
        x = self._per_frame(self._stem, frames, masks.frames)
        for stage, layer in zip((2, 3, 4), (trunk.layer2, trunk.layer3, trunk.layer4), strict=True):
            x = self._per_frame(layer, x, masks.frames)
            if stage in self.stages:
                clips = x.reshape(batch, -1, *x.shape[1:]).transpose(1, 2)  # (B, C, T, H, W)
                x = self.after_stage(stage, clips, masks).transpose(1, 2).flatten(0, 1)
        return torch.flatten(trunk.avgpool(x), 1)

    def _stem(self, frames: torch.Tensor) -> torch.Tensor:
        trunk = self.trunk
        return trunk.layer1(trunk.maxpool(trunk.relu(trunk.bn1(trunk.conv1(frames)))))

    def _per_frame(self, layer: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                   valid_frames: torch.Tensor) -> torch.Tensor:
        """``layer`` on each frame. In training only on the clips' own frames, so that BatchNorm's batch
        statistics never see padding; in evaluation (running statistics) on all, keeping the shapes static."""
        if not self.training:
            return layer(x)
        out = layer(x[valid_frames])
        full = out.new_zeros(x.shape[0], *out.shape[1:])
        full[valid_frames] = out
        return full
