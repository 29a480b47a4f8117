"""VAC's TemporalConv: 1D convolutions and poolings over time, with exact integer length bookkeeping."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

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
