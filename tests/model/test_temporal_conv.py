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


@pytest.mark.parametrize("length", [17, 18, 52, 101, 240])
def test_module_output_length_matches_the_bookkeeping(length):
    """The lengths forward reports for a padded batch against what the layers give each clip run alone, and
    against the arithmetic of K5-P2-K5-P2 by hand (a valid convolution takes 4 steps, a pooling halves)."""
    conv = TemporalConv(8, 12, VAC).eval()
    clips = torch.randn(2, 8, length)
    _, lengths = conv(clips, torch.tensor([length, length - 1]))
    alone = [conv(clips[i:i + 1, :, :n], torch.tensor([n]))[0].shape[-1] for i, n in enumerate((length, length - 1))]
    by_hand = [((n - 4) // 2 - 4) // 2 for n in (length, length - 1)]
    assert lengths.tolist() == alone == by_hand


def test_state_dict_indices_follow_the_original():
    keys = set(TemporalConv(512, 1024, VAC).state_dict())
    assert {"temporal_conv.0.weight", "temporal_conv.1.running_mean", "temporal_conv.4.weight",
            "temporal_conv.5.bias"} <= keys
