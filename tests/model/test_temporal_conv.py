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
    lengths = conv(clips, torch.tensor([length, length - 1])).lengths
    alone = [conv(clips[i:i + 1, :, :n], torch.tensor([n]))[0].shape[-1] for i, n in enumerate((length, length - 1))]
    by_hand = [((n - 4) // 2 - 4) // 2 for n in (length, length - 1)]
    assert lengths.tolist() == alone == by_hand


def test_state_dict_indices_follow_the_original():
    keys = set(TemporalConv(512, 1024, VAC).state_dict())
    assert {"temporal_conv.0.weight", "temporal_conv.1.running_mean", "temporal_conv.4.weight",
            "temporal_conv.5.bias"} <= keys


def _lifting(kernels, seed=0) -> TemporalConv:
    """A TemporalConv with lifting pools whose every weight is live (the original starts some at 0), in float64."""
    torch.manual_seed(seed)
    conv = TemporalConv(6, 8, kernels, pooling="lift").eval().double()
    with torch.no_grad():
        for parameter in conv.parameters():
            if not parameter.any():
                parameter.normal_(0.0, 0.5)
    return conv


def test_a_lifting_pool_sees_only_its_clip_s_steps_and_halves_them():
    """Each clip of a padded batch against the clip alone, odd lengths included (the unpaired last step is dropped,
    as max-pooling drops it); a pool's loss terms are norms over the batch's own steps, so the clips' alone add up
    in squares."""
    conv = _lifting(["K3", "P2"])
    lengths = [40, 29, 17, 8]
    clips = torch.randn(len(lengths), 6, max(lengths), dtype=torch.float64)
    with torch.no_grad():
        together = conv(clips, torch.tensor(lengths))
        alone = [conv(clips[i:i + 1, :, :n], torch.tensor([n])) for i, n in enumerate(lengths)]
    assert together.lengths.tolist() == [a.features.shape[-1] for a in alone] == [(n - 2) // 2 for n in lengths]
    for i, single in enumerate(alone):
        assert (together.features[i, :, :int(together.lengths[i])] - single.features[0]).abs().max() < 1e-12, i
    for term in ("Cu", "Cp"):
        expected = torch.stack([a.lifting[term] for a in alone]).square().sum().sqrt()
        assert together.lifting[term].item() == pytest.approx(expected.item(), rel=1e-12)
    # What lies past a clip is never read: noise there changes nothing of it.
    noisy = clips.clone()
    noisy[1, :, 29:] = 1e3
    again = conv(noisy, torch.tensor(lengths))
    assert torch.equal(again.features[1, :, :int(together.lengths[1])], together.features[1, :, :13])
    assert again.lifting["Cu"] == together.lifting["Cu"]


def test_lifting_pools_keep_the_original_s_names_and_refuse_what_they_cannot_do():
    conv = TemporalConv(512, 1024, VAC, pooling="lift")
    assert {"temporal_conv.0.weight", "temporal_conv.1.running_mean", "temporal_conv.3.predictor.0.weight",
            "temporal_conv.3.updater.2.bias", "temporal_conv.7.weight1.conv.weight",
            "temporal_conv.7.weight2.insnorm.bias"} <= set(conv.state_dict())
    assert TemporalConv(8, 12, VAC).forward(torch.randn(1, 8, 20), torch.tensor([20])).lifting == {}
    with pytest.raises(ValueError, match="only P2"):
        TemporalConv(8, 12, ["K5", "P3"], pooling="lift")
    with pytest.raises(ValueError, match="temporal pooling 'avg'"):
        TemporalConv(8, 12, VAC, pooling="avg")
