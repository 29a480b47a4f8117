"""The temporal geometry of K5-P2-K5-P2 and the original's replicate padding."""

from __future__ import annotations

import pytest

from qslr.pipelines.temporal_padding import padded_order, padding_for, parse_kernel, receptive_field, stride

VAC = ["K5", "P2", "K5", "P2"]


def test_vac_geometry():
    assert (receptive_field(VAC), stride(VAC), padding_for(VAC)) == (16, 4, (6, 12))


def test_padded_order_replicates_the_edges():
    assert padded_order([3, 4, 5], VAC) == [3] * 6 + [3, 4, 5] + [5] * 7
    assert len(padded_order(list(range(8)), VAC)) == 20


@pytest.mark.parametrize("spec", ["X5", "K", "P0", "k5", "K-1"])
def test_bad_kernel_specs_are_refused(spec):
    with pytest.raises(ValueError, match="temporal kernel"):
        parse_kernel(spec)
