"""VAC's TemporalConv: 1D convolutions and poolings over time, with exact integer length bookkeeping."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


def parse_kernel(spec: str) -> tuple[str, int]:
    kind, size = spec[:1], spec[1:]
    if kind not in ("K", "P") or not size.isdigit() or int(size) < 1:
        raise ValueError(f"temporal kernel {spec!r}: expected K<size> (convolution) or P<size> (max-pooling)")
    return kind, int(size)


def output_lengths(lengths: torch.Tensor, kernels: Sequence[str]) -> torch.Tensor:
    """Lengths after the stack: a K<k> removes k-1 frames, a P<p> floor-divides by p (int64 throughout)."""
    lengths = lengths.to(torch.int64)
    for spec in kernels:
        kind, size = parse_kernel(spec)
        lengths = lengths - (size - 1) if kind == "K" else torch.div(lengths, size, rounding_mode="floor")
    return lengths


def stride(kernels: Sequence[str]) -> int:
    return math.prod(size for kind, size in map(parse_kernel, kernels) if kind == "P")


def receptive_field(kernels: Sequence[str]) -> int:
    field, step = 1, 1
    for kind, size in map(parse_kernel, kernels):
        field += (size - 1) * step  # a pooling window widens the field as much as a kernel does
        step *= size if kind == "P" else 1
    return field


def padding_for(kernels: Sequence[str]) -> tuple[int, int]:
    """The original's replicate padding: (left, extra right) frames around a clip rounded up to the stride.

    For K5-P2-K5-P2: 6 on the left, and the right side brought to a multiple of 4 plus 12 in all, so that a
    clip of L frames gives exactly ceil(L / 4) output steps.
    """
    total = receptive_field(kernels) - stride(kernels)
    return total // 2, total


def padded_length(num_frames: int, kernels: Sequence[str]) -> int:
    s = stride(kernels)
    return math.ceil(num_frames / s) * s + padding_for(kernels)[1]


class TemporalConv(nn.Module):
    """(B, C_in, T) -> (B, hidden, T'): Conv1d+BN+ReLU for each K, MaxPool1d for each P."""

    def __init__(self, input_size: int, hidden_size: int = 1024, kernels: Sequence[str] = ("K5", "P2", "K5", "P2")):
        super().__init__()
        self.kernels = list(kernels)
        layers: list[nn.Module] = []
        channels = input_size
        for kind, size in map(parse_kernel, self.kernels):
            if kind == "K":
                layers += [nn.Conv1d(channels, hidden_size, size, stride=1, padding=0), nn.BatchNorm1d(hidden_size),
                           nn.ReLU(inplace=True)]
                channels = hidden_size
            else:
                layers.append(nn.MaxPool1d(size, ceil_mode=False))
        self.temporal_conv = nn.Sequential(*layers)
        self.out_dim = channels

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.temporal_conv(features), output_lengths(lengths, self.kernels)
