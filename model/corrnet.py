"""CorrNet's frame encoder (Hu et al., CVPR 2023): ResNet-18 with correlation modules between its stages.

The ResNet is torchvision's, run frame by frame (CorrNet writes it with 3D convolutions of temporal size 1, the
same arithmetic). After some of its stages (2, 3 and 4 in the Phoenix checkpoints; 3 and 4 in the CSL-Daily one) a
correlation module adds, weighted by a learned ``alpha``:
- the affinities of every position of a frame with every position of the next frame and of the previous one,
  through a sigmoid centred on 0, aggregating those frames' (1x1-projected) features; and
- a gate from an identification branch: a 1x1 reduction to a sixteenth of the channels, three depthwise (9, 3, 3)
  convolutions with spatial dilations 1, 2 and 3 weighted by learned weights, a 1x1 expansion, a sigmoid centred
  on 0.
So a frame's features depend on its neighbours: each module reaches 4 frames on each side through its (9, 3, 3)
convolutions and one more through the affinities.

Batch independence (`qslr.model.clip_resnet`). A clip's frames are those before its length; what lies after them in
a padded batch never reaches its output. As when the original runs one clip alone: the frame after a clip's last is
the last itself (the original repeats the edge frame), and the temporal convolutions read zeros beyond either end
(their zero padding). In training, BatchNorm sees only the clips' own frames, as elsewhere in QSLR.

The module and parameter names are the original's (``corr1``, ``down_conv``, ``spatial_aggregation1``, ``alpha``,
...), so its checkpoints load by name (`qslr.model.vac_import`).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

import torch
from torch import nn

from qslr.model.clip_resnet import REDUCTION, ClipMasks, ClipResNet
from qslr.model.frame_encoders import IMAGENET_WIDTH, resnet_encoder

DEFAULT_STAGES = (2, 3, 4)


class IdentificationGate(nn.Module):
    """CorrNet's identification branch, which CorrNet+ keeps: a 1x1 reduction to a sixteenth of the channels, three
    depthwise (9, 3, 3) convolutions with spatial dilations 1, 2 and 3 weighted by learned weights, a 1x1 expansion
    and a sigmoid centred on 0, a gate on (B, C, T, H, W) features of clips. Subclasses add the correlations it
    gates, beside these parameters as in the original's modules."""

    def __init__(self, channels: int):
        super().__init__()
        reduced = channels // REDUCTION
        self.down_conv = nn.Conv3d(channels, reduced, kernel_size=1, bias=False)
        self.spatial_aggregation1, self.spatial_aggregation2, self.spatial_aggregation3 = (
            nn.Conv3d(reduced, reduced, kernel_size=(9, 3, 3), padding=(4, d, d), dilation=(1, d, d), groups=reduced)
            for d in (1, 2, 3))
        self.weights = nn.Parameter(torch.ones(3) / 3)
        self.conv_back = nn.Conv3d(reduced, channels, kernel_size=1, bias=False)

    def gate(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """``valid`` (B, 1, T, 1, 1): the clips' own frames."""
        # Zeros past each clip's end, as the temporal convolutions' own padding gives a clip alone; the 1x1
        # reduction has no bias, so zeroing after it is the same as before and touches 16x fewer values.
        reduced = self.down_conv(x) * valid
        aggregated = (self.spatial_aggregation1(reduced) * self.weights[0]
                      + self.spatial_aggregation2(reduced) * self.weights[1]
                      + self.spatial_aggregation3(reduced) * self.weights[2])
        return torch.sigmoid(self.conv_back(aggregated)) - 0.5


class Correlation(IdentificationGate):
    """One correlation module on (B, C, T, H, W) features of clips of ``lengths`` frames."""

    def __init__(self, channels: int):
        super().__init__(channels)
        self.down_conv2 = nn.Conv3d(channels, channels, kernel_size=1, bias=False)
        self.weights2 = nn.Parameter(torch.ones(2) / 2)

    def forward(self, x: torch.Tensor, valid: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """``valid`` (B, 1, T, 1, 1): the clips' own frames; ``last`` (B, 1, T, 1, 1): each clip's last frame."""
        projected = self.down_conv2(x)
        # The next frame, except at a clip's last frame, whose "next" is itself; the previous frame, the first
        # frame's being itself. (Past a clip's end the values are never read by its own frames.)
        following = torch.where(last, projected, torch.cat([projected[:, :, 1:], projected[:, :, -1:]], 2))
        preceding = torch.cat([projected[:, :, :1], projected[:, :, :-1]], 2)
        features = (_attend(x, following) * self.weights2[0] + _attend(x, preceding) * self.weights2[1])
        return features * self.gate(x, valid)


def _attend(x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """For every position p of each frame of ``x`` (B, C, T, H, W): the sum over the positions q of ``other``'s
    frame of (sigmoid(<x_p, other_q>) - 0.5) * other_q. The original's einsums, written as the two batched matrix
    products they are, which every runtime runs as such (GEMMs) in any precision."""
    height, width = x.shape[3], x.shape[4]
    queries = x.permute(0, 2, 3, 4, 1).flatten(0, 1).flatten(1, 2)  # (B*T, HW, C)
    keys = other.permute(0, 2, 3, 4, 1).flatten(0, 1).flatten(1, 2)
    weights = torch.sigmoid(queries @ keys.transpose(1, 2)) - 0.5  # (B*T, HW, HW)
    attended = (weights @ keys).unflatten(1, (height, width))  # (B*T, H, W, C)
    return attended.reshape(x.shape[0], -1, *attended.shape[1:]).permute(0, 4, 1, 2, 3)


class CorrNetEncoder(ClipResNet):
    """CorrNet on a ResNet trunk (`ClipResNet`): a correlation module after each of ``stages``."""

    def __init__(self, trunk: nn.Module, stages: Sequence[int] = DEFAULT_STAGES):
        super().__init__(trunk, stages)
        for stage in self.stages:
            # The original's names: corr1 follows layer2, corr2 layer3, corr3 layer4.
            self.add_module(f"corr{stage - 1}", Correlation(self.channels[stage]))
        for module in self.modules():
            if isinstance(module, nn.Conv3d):  # the original initialises its convolutions so
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        # Zero at the start: the correlations begin as no change to the ImageNet features.
        self.alpha = nn.Parameter(torch.zeros(len(self.stages)))

    def after_stage(self, stage: int, clips: torch.Tensor, masks: ClipMasks) -> torch.Tensor:
        change = getattr(self, f"corr{stage - 1}")(clips, masks.valid, masks.last)
        return clips + change * self.alpha[self.stages.index(stage)]


def corrnet_encoder(*, weights: str | Enum | None = None, stages: Sequence[int] = DEFAULT_STAGES,
                    width: int = IMAGENET_WIDTH) -> CorrNetEncoder:
    """CorrNet on torchvision's ResNet-18, its trunk from ``weights`` as for ``resnet18`` (ImageNet's for training
    from scratch, as the original does), its correlation modules freshly initialised. ``width``: the ResNet's
    channels after the stem (`resnet_encoder`); a narrow one runs every module of CorrNet at a fraction of the cost."""
    return CorrNetEncoder(resnet_encoder("resnet18", weights=weights, width=width).trunk, stages)
