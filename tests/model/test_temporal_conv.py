"""TemporalConv: its output lengths match the length bookkeeping, and its layers keep the original's indices."""

from __future__ import annotations

import math

import pytest
import torch

from qslr.model.temporal_conv import TemporalConv, output_lengths
from qslr.pipelines.temporal_padding import padded_length, stride

VAC = ["K5", "P2", "K5", "P2"]


@pytest.mark.parametrize("kernels", [VAC, ["K3"], ["K5", "P2"], ["K3", "P2", "K3", "P2", "K3", "P2"]])
def test_padded_clips_give_ceil_length_over_stride(kernels):
    lengths = torch.arange(1, 301)
    padded = torch.tensor([padded_length(int(n), kernels) for n in lengths])
    expected = torch.tensor([math.ceil(int(n) / stride(kernels)) for n in lengths])
    result = output_lengths(padded, kernels)
    assert result.dtype == torch.int64 and torch.equal(result, expected)


@pytest.mark.parametrize("length", [16, 17, 52, 101, 240])
def test_module_output_length_matches_the_bookkeeping(length):
    conv = TemporalConv(8, 12, VAC).eval()
    features, lengths = conv(torch.randn(2, 8, length), torch.tensor([length, length - 1]))
    assert features.shape == (2, 12, int(output_lengths(torch.tensor([length]), VAC)))
    assert lengths.tolist() == output_lengths(torch.tensor([length, length - 1]), VAC).tolist()


def test_state_dict_indices_follow_the_original():
    keys = set(TemporalConv(512, 1024, VAC).state_dict())
    assert {"temporal_conv.0.weight", "temporal_conv.1.running_mean", "temporal_conv.4.weight",
            "temporal_conv.5.bias"} <= keys
