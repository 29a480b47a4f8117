"""CorrNet+'s frame encoder (Hu et al. 2024, "CorrNet+: Sign Language Recognition and Translation via Spatial-Temporal
Correlation"): ResNet-18 with a correlation module and a temporal weighting module after stages 2, 3 and 4.

The correlation module after a stage (weighted by the encoder's learned ``alpha``, zero at the start):
- sums up each frame as one query vector: its features averaged over space, their maximum over space, and an
  attention pooling over space with a learned query (one head), mixed by learned weights;
- correlates that query with every position of the frames within a temporal neighbourhood (1, 3 and 5 frames on
  each side after stages 2, 3 and 4; the frame itself left out), through a sigmoid centred on 0, aggregating those
  positions' 1x1-projected features, each neighbour's weighted by a learned weight; and
- gates the result by CorrNet's identification branch (`IdentificationGate`), position by position.
The temporal weighting module then scales each frame's features by a gate from its spatial mean's neighbourhood in
time: a 1x1 reduction to a sixteenth of the channels, three depthwise 3-step convolutions with dilations 1, 2 and 3
weighted by learned weights, a 1x1 expansion and a sigmoid centred on 0, weighted by its own ``alpha`` (zero at the
start) and added.

Batch independence (`qslr.model.clip_resnet`): as when the original runs a clip alone, its neighbourhood windows,
its (9, 3, 3) aggregation convolutions and the temporal weighting's dilated convolutions read zeros before a clip's
first frame and after its last; everything else acts frame by frame.

The module and parameter names are the original's (``corr2``, ``attpool``, ``weights4``, ``temporal_weight2``,
``conv_enhance``, ``alpha``, ...), so its checkpoints load by name (`qslr.model.vac_import`). Its attention pooling
is computed with the learned query folded into the key projection (the same softmax, since a key's bias adds the
same number to every position's score), and its value projection after the weighted sum (the weights sum to 1):
the original's arithmetic at a fraction of the cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

import torch
from torch import nn

from qslr.model.clip_resnet import REDUCTION, ClipMasks, ClipResNet
from qslr.model.corrnet import IdentificationGate
from qslr.model.frame_encoders import IMAGENET_WIDTH, resnet_encoder

DEFAULT_STAGES = (2, 3, 4)
NEIGHBOURS = {2: 1, 3: 3, 4: 5}  # frames on each side that the correlation module after a stage reaches


class AttentionPool(nn.Module):
    """A learned query attending over the positions of each frame (one head): (B, C, T, H, W) -> (B, C, T)."""

    def __init__(self, channels: int):
        super().__init__()
        self.k_proj, self.q_proj, self.v_proj, self.c_proj = (nn.Linear(channels, channels) for _ in range(4))
        self.query = nn.Parameter(torch.rand(1, 1, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        positions = x.flatten(3).permute(0, 2, 3, 1)  # (B, T, HW, C)
        query = self.q_proj(self.query[0, 0]) / self.q_proj.out_features ** 0.5
        # <W_k p + b_k, q> for every position p: p . (W_k^T q), plus b_k . q, the same for all (so no change to the
        # softmax; kept so that b_k is in the graph as in the original, its gradient zero there too).
        scores = positions @ (self.k_proj.weight.t() @ query) + self.k_proj.bias @ query  # (B, T, HW)
        pooled = (torch.softmax(scores, -1).unsqueeze(2) @ positions).squeeze(2)  # (B, T, C)
        return self.c_proj(self.v_proj(pooled)).transpose(1, 2)


class NeighbourCorrelation(IdentificationGate):
    """One CorrNet+ correlation module on (B, C, T, H, W) features of clips, reaching ``neighbours`` frames on each
    side; its output is the change the encoder adds, weighted by its ``alpha``."""

    def __init__(self, channels: int, neighbours: int):
        super().__init__(channels)
        self.neighbours = neighbours
        self.down_conv2 = nn.Conv3d(channels, channels, kernel_size=1, bias=False)
        self.weights2 = nn.Parameter(torch.ones(2 * neighbours) / (2 * neighbours))
        self.weights4 = nn.Parameter(torch.ones(3) / 3)
        self.attpool = AttentionPool(channels)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """``valid`` (B, 1, T, 1, 1): the clips' own frames."""
        batch, channels, time = x.shape[:3]
        query = (x.mean((3, 4)) * self.weights4[0] + x.amax((3, 4)) * self.weights4[1]
                 + self.attpool(x) * self.weights4[2])  # (B, C, T)
        # Zeros past each clip's end and (the padding) before its start: the neighbours a clip alone has there. The
        # projection has no bias, so zeroing after it is the same as before.
        n = self.neighbours
        projected = nn.functional.pad(self.down_conv2(x) * valid, (0, 0, 0, 0, n, n))
        offsets = [o for o in range(-n, n + 1) if o != 0]
        keys = torch.stack([projected[:, :, n + o:n + o + time] for o in offsets], 3)  # (B, C, T, 2n, H, W)
        keys = (keys * self.weights2.view(1, 1, 1, -1, 1, 1)).flatten(3).transpose(1, 2).flatten(0, 1)  # (BT, C, L)
        queries = query.transpose(1, 2).reshape(-1, 1, channels)  # (B*T, 1, C)
        affinities = torch.sigmoid(queries @ keys) - 0.5  # (B*T, 1, L)
        correlated = (keys @ affinities.transpose(1, 2)).reshape(batch, -1, channels).transpose(1, 2)  # (B, C, T)
        return correlated[..., None, None] * self.gate(x, valid)


class TemporalWeighting(nn.Module):
    """CorrNet+'s temporal weighting of (B, C, T, H, W) features of clips; its output is the change to add."""

    def __init__(self, channels: int):
        super().__init__()
        hidden = channels // REDUCTION
        self.conv_transform = nn.Conv1d(channels, hidden, kernel_size=1)
        self.conv_back = nn.Conv1d(hidden, channels, kernel_size=1)
        self.conv_enhance = nn.ModuleList(
            nn.Conv1d(hidden, hidden, kernel_size=3, padding=d, dilation=d, groups=hidden) for d in (1, 2, 3))
        self.weights = nn.Parameter(torch.ones(3) / 3)
        self.alpha = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """``valid`` (B, 1, T): the clips' own frames."""
        # The reduction has a bias: zeroed after it, past each clip's end, as the dilated convolutions' padding.
        reduced = self.conv_transform(x.mean((3, 4))) * valid
        aggregated = sum(conv(reduced) * weight for conv, weight in zip(self.conv_enhance, self.weights, strict=True))
        return x * (torch.sigmoid(self.conv_back(aggregated)) - 0.5)[..., None, None] * self.alpha


class CorrNetPlusEncoder(ClipResNet):
    """CorrNet+ on a ResNet trunk (`ClipResNet`): a correlation and a temporal weighting module after each of
    ``stages``."""

    def __init__(self, trunk: nn.Module, stages: Sequence[int] = DEFAULT_STAGES):
        super().__init__(trunk, stages)
        for stage in self.stages:  # the original's names: corr2 and temporal_weight2 follow layer2, ...
            self.add_module(f"corr{stage}", NeighbourCorrelation(self.channels[stage], NEIGHBOURS[stage]))
            self.add_module(f"temporal_weight{stage}", TemporalWeighting(self.channels[stage]))
        for module in self.modules():
            if isinstance(module, nn.Conv3d):  # the original initialises its 3D convolutions so
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        self.alpha = nn.Parameter(torch.zeros(len(self.stages)))

    def after_stage(self, stage: int, clips: torch.Tensor, masks: ClipMasks) -> torch.Tensor:
        clips = clips + getattr(self, f"corr{stage}")(clips, masks.valid) * self.alpha[self.stages.index(stage)]
        return clips + getattr(self, f"temporal_weight{stage}")(clips, masks.steps)


def corrnet_plus_encoder(*, weights: str | Enum | None = None, stages: Sequence[int] = DEFAULT_STAGES,
                         width: int = IMAGENET_WIDTH) -> CorrNetPlusEncoder:
    """CorrNet+ on torchvision's ResNet-18, its trunk from ``weights`` as for ``resnet18`` (ImageNet's for training
    from scratch, as the original does), its modules freshly initialised. ``width``: the ResNet's channels after the
    stem (`resnet_encoder`); a narrow one runs every module at a fraction of the cost."""
    return CorrNetPlusEncoder(resnet_encoder("resnet18", weights=weights, width=width).trunk, stages)
