"""CorrNet+'s temporal pooling (Hu et al. 2024, after LiftPool): a lifting scheme in place of max-pooling.

A sequence of 2n steps splits into its even steps e and odd steps o. A predictor guesses the odd steps from the even
ones, leaving the detail d = o - P(e); an updater corrects the even steps with it, giving the smooth sequence
s = e + U(d). Each is then re-weighted step by step (`LocalWeighting`) and their sum is the n-step output. Two loss
terms come with it: Cu = ||s - o|| (the smooth sequence should follow the signal) and Cp = ||d|| (the prediction should
leave little), each the Euclidean norm over the batch's steps as the original takes them.

Batch independence. Each clip of the padded batch is pooled as when it is run alone: what lies past its own steps is
zero where a convolution would read it (the original's zero padding at the clip's end), the instance normalisation's
statistics are over its own steps, and neither loss term counts padding. A clip of an odd number of steps gives the
floor of its half, its last step unpaired (the original accepts even lengths only, which QSLR's padding gives).

The parameter names are the original's (``predictor``, ``updater``, ``weight1``, ``weight2``, ``conv``,
``insnorm``), so its checkpoints load by name (`qslr.model.vac_import`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn


class MaskedInstanceNorm(nn.Module):
    """InstanceNorm1d (affine) over each clip's own steps: (B, C, T) with ``valid`` (B, 1, T) -> (B, C, T)."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        # Statistics in float32 at least, whatever the served precision: a sum of a clip's squares overflows float16.
        values = x.to(_at_least_float32(x.dtype))
        mask = valid.to(values.dtype)
        count = mask.sum(-1, keepdim=True).clamp(min=1.0)
        mean = (values * mask).sum(-1, keepdim=True) / count
        variance = ((values - mean) * mask).square().sum(-1, keepdim=True) / count
        normalised = (values - mean) * torch.rsqrt(variance + self.eps)
        return (normalised * self.weight.to(values.dtype)[:, None] + self.bias.to(values.dtype)[:, None]).to(x.dtype)


def _at_least_float32(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


class LocalWeighting(nn.Module):
    """x + x * (sigmoid(norm(conv(x))) - 0.5): each step scaled by what its 5-step neighbourhood says of it.
    ``x`` must be zero past each clip's steps."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, kernel_size=5, padding=2)
        self.insnorm = MaskedInstanceNorm(channels)
        nn.init.zeros_(self.conv.weight)  # as the original: a uniform weighting at the start

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return x + x * (torch.sigmoid(self.insnorm(self.conv(x), valid)) - 0.5)


def _lifting_step(channels: int) -> nn.Sequential:
    """A depthwise 3-step convolution, a pointwise one (zero at the start) and a tanh, as the original's."""
    step = nn.Sequential(nn.Conv1d(channels, channels, kernel_size=3, padding=1, groups=channels),
                         nn.ReLU(inplace=True), nn.Conv1d(channels, channels, kernel_size=1), nn.Tanh())
    nn.init.zeros_(step[2].weight)
    return step


class LiftingErrors(NamedTuple):
    update: torch.Tensor  # ||s - o|| over the clips' own steps (the Cu term)
    prediction: torch.Tensor  # ||d|| (the Cp term)


class LiftingPool(nn.Module):
    """(B, C, T) features of clips of ``lengths`` steps -> ((B, C, T // 2) features, their errors)."""

    def __init__(self, channels: int, size: int = 2):
        super().__init__()
        if size != 2:
            raise ValueError(f"lifting pooling P{size}: the lifting scheme halves time, so only P2")
        self.predictor = _lifting_step(channels)
        self.updater = _lifting_step(channels)
        self.weight1 = LocalWeighting(channels)
        self.weight2 = LocalWeighting(channels)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, LiftingErrors]:
        odd = x[:, :, 1::2]
        even = x[:, :, 0::2][:, :, :odd.shape[2]]  # an odd batch length leaves its last step unpaired
        steps = torch.arange(odd.shape[2], device=x.device)[None, :]
        valid = (steps < torch.div(lengths, 2, rounding_mode="trunc")[:, None])[:, None, :].to(x.dtype)
        detail = (odd - self.predictor(even * valid)) * valid
        smooth = (even + self.updater(detail)) * valid
        precise = _at_least_float32(x.dtype)
        errors = LiftingErrors(torch.linalg.vector_norm((smooth - odd * valid).to(precise)),
                               torch.linalg.vector_norm(detail.to(precise)))
        return self.weight1(smooth, valid) + self.weight2(detail, valid), errors
