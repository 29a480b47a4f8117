"""The temporal geometry of VAC's 1D CNN (K5-P2-K5-P2), and the replicate padding it needs.

It lives with the data pipelines because the loaders pad clips to it; the model builds its layers
from the same kernel specs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

VAC_KERNELS = ("K5", "P2", "K5", "P2")


def parse_kernel(spec: str) -> tuple[str, int]:
    kind, size = spec[:1], spec[1:]
    if kind not in ("K", "P") or not size.isdigit() or int(size) < 1:
        raise ValueError(f"temporal kernel {spec!r}: expected K<size> (convolution) or P<size> (max-pooling)")
    return kind, int(size)


def stride(kernels: Sequence[str]) -> int:
    return math.prod(size for kind, size in map(parse_kernel, kernels) if kind == "P")


def receptive_field(kernels: Sequence[str]) -> int:
    field, step = 1, 1
    for kind, size in map(parse_kernel, kernels):
        field += (size - 1) * step  # a pooling window widens the field as much as a kernel does
        step *= size if kind == "P" else 1
    return field


def padding_for(kernels: Sequence[str]) -> tuple[int, int]:
    """The original's replicate padding: (left, total) frames added around a clip rounded up to the stride.

    For K5-P2-K5-P2: 6 on the left and 12 in all, so that a clip of L frames gives exactly ceil(L / 4)
    output steps, each centred on its 16-frame receptive field.
    """
    total = receptive_field(kernels) - stride(kernels)
    return total // 2, total


def padded_length(num_frames: int, kernels: Sequence[str]) -> int:
    s = stride(kernels)
    return math.ceil(num_frames / s) * s + padding_for(kernels)[1]


def padded_order(order: Sequence[int], kernels: Sequence[str]) -> list[int]:
    """Frame indices with the first frame repeated on the left and the last on the right."""
    left, _ = padding_for(kernels)
    right = padded_length(len(order), kernels) - len(order) - left
    return [order[0]] * left + list(order) + [order[-1]] * right
