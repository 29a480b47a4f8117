"""VAC's TemporalConv: 1D convolutions and poolings over time, with exact integer length bookkeeping.

Its poolings are VAC's max-poolings, or CorrNet+'s lifting pools (`qslr.model.lifting_pool`), which also give the
two loss terms CorrNet+ trains with. Either way the layers keep VAC's flat indices (``temporal_conv.0`` the first
convolution, ``.1`` its BatchNorm, ``.3`` the first pooling, ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from qslr.model.lifting_pool import LiftingPool
from qslr.model.loss_terms import PREDICTION, UPDATE
from qslr.model.temporal_poolings import LIFT, MAX, POOLINGS
from qslr.pipelines.temporal_padding import parse_kernel


def output_lengths(lengths: torch.Tensor, kernels: Sequence[str]) -> torch.Tensor:
    """Lengths after the stack: a K<k> removes k-1 frames, a P<p> floor-divides by p (int64 throughout)."""
    lengths = lengths.to(torch.int64)
    for spec in kernels:
        kind, size = parse_kernel(spec)
        # Truncation equals floor for the non-negative lengths and exports as a plain integer Div (floor
        # division adds a Mod, which TensorRT's ONNX parser has not always accepted).
        lengths = lengths - (size - 1) if kind == "K" else torch.div(lengths, size, rounding_mode="trunc")
    return lengths


class TemporalOutput(NamedTuple):
    features: torch.Tensor  # (B, hidden, T')
    lengths: torch.Tensor  # (B,) int64 valid steps
    lifting: dict[str, torch.Tensor]  # the lifting pools' loss terms (Cu, Cp), summed over them; empty without


class TemporalConv(nn.Module):
    """(B, C_in, T) -> (B, hidden, T'): Conv1d+BN+ReLU for each K, a max- or lifting pool for each P."""

    def __init__(self, input_size: int, hidden_size: int = 1024, kernels: Sequence[str] = ("K5", "P2", "K5", "P2"),
                 pooling: str = MAX):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"temporal pooling {pooling!r}: choose one of {', '.join(POOLINGS)}")
        self.kernels = list(kernels)
        self.pooling = pooling
        layers: list[nn.Module] = []
        # Where each lifting pool sits in the kernels: its input lengths are those after the kernels before it.
        self._lifting_positions: list[int] = []
        channels = input_size
        for position, (kind, size) in enumerate(map(parse_kernel, self.kernels)):
            if kind == "K":
                layers += [nn.Conv1d(channels, hidden_size, size, stride=1, padding=0), nn.BatchNorm1d(hidden_size),
                           nn.ReLU(inplace=True)]
                channels = hidden_size
            elif pooling == LIFT:
                layers.append(LiftingPool(channels, size))
                self._lifting_positions.append(position)
            else:
                layers.append(nn.MaxPool1d(size, ceil_mode=False))
        self.temporal_conv = nn.Sequential(*layers)
        self.out_dim = channels

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> TemporalOutput:
        pool_lengths = iter([output_lengths(lengths, self.kernels[:p]) for p in self._lifting_positions])
        errors = []
        for layer in self.temporal_conv:
            if isinstance(layer, LiftingPool):
                features, pool_errors = layer(features, next(pool_lengths))
                errors.append(pool_errors)
            else:
                features = layer(features)
        lifting = {UPDATE: sum(e.update for e in errors), PREDICTION: sum(e.prediction for e in errors)} if errors \
            else {}
        return TemporalOutput(features, output_lengths(lengths, self.kernels), lifting)
