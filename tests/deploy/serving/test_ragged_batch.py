"""Grouping a dynamic batch's clips by length: bounded padding, every clip once, no needless splits."""

from __future__ import annotations

import numpy as np
import pytest

from qslr.deploy.serving.ragged_batch import length_groups


def _padding(lengths, group) -> tuple[int, int]:
    real = sum(lengths[i] for i in group)
    return max(lengths[i] for i in group) * len(group) - real, real


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("max_padding", [0.0, 0.1, 0.5])
def test_every_clip_once_and_no_group_pads_beyond_the_bound(seed, max_padding):
    lengths = np.random.default_rng(seed).integers(16, 400, size=int(np.random.default_rng(seed).integers(1, 17)))
    groups = length_groups(lengths.tolist(), max_padding)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    for group in groups:
        padded, real = _padding(lengths, group)
        assert padded <= max_padding * real
    # Greedy over sorted lengths: the next group's shortest clip would have broken the bound of the one before.
    for before, after in zip(groups, groups[1:], strict=False):
        padded, real = _padding(lengths, [*before, after[0]])
        assert padded > max_padding * real


def test_equal_lengths_share_one_call_and_mixed_ones_are_split():
    assert length_groups([100] * 8, 0.0) == [list(range(8))]
    assert length_groups([50, 200, 52, 198], 0.1) == [[0, 2], [3, 1]]
    assert length_groups([50, 200], 10.0) == [[0, 1]]
    assert length_groups([], 0.1) == []
