"""gpu-check's inference comparisons, as far as a CPU can hold them: what is compared, and against what tolerance."""

from __future__ import annotations

import math

import pytest
import torch

from qslr.deploy.export.tensorrt_engine import ShapeRange
from qslr.deploy.served import served_from_checkpoint
from qslr.tools.gpu_model_checks import FP16_TOLERANCE, difference, judged, on, worst
from qslr.tools.gpu_workspace import BATCHES, PROFILE


def test_every_compared_batch_lies_in_the_profile_and_its_corners_are_compared():
    profile = ShapeRange.parse(*PROFILE)
    for batch, time in BATCHES:
        assert profile.min_batch <= batch <= profile.max_batch and profile.min_time <= time <= profile.max_time
    assert (profile.min_batch, profile.min_time) in BATCHES and (profile.max_batch, profile.max_time) in BATCHES


def test_only_valid_steps_are_compared_and_their_counts_must_agree():
    steps = torch.tensor([3, 1])
    expected = torch.zeros(2, 3, 5)
    got = expected.clone()
    got[1, 1:] = 7.0  # past the second clip's one step: padding, not compared
    got[0, 2, 4] = -0.25
    assert difference((expected, steps), (got, steps)) == 0.25
    with pytest.raises(AssertionError, match=r"output lengths differ: \[3, 2\] against \[3, 1\]"):
        difference((expected, steps), (got, torch.tensor([3, 2])))


def test_a_difference_over_the_tolerance_or_not_a_number_fails():
    assert judged("x", 1e-3, 5e-2) == {"max_difference": 1e-3, "tolerance": 5e-2}
    with pytest.raises(AssertionError, match=r"the fp16 engine: max \|difference\| 6.00e-02, over the tolerance of "
                                             r"5e-02"):
        judged("the fp16 engine", 6e-2, 5e-2)
    with pytest.raises(AssertionError):
        judged("x", math.nan, 5e-2)


@pytest.mark.slow
def test_the_fp16_program_stays_within_its_tolerance_of_float32(checkpoint):
    """The same comparison the GPU parts make, run on the CPU: PyTorch's CPU fp16 kernels against float32."""
    fp32, fp16 = (served_from_checkpoint(checkpoint, precision=p)[0] for p in ("fp32", "fp16"))
    apart = worst(on("cpu", fp32), on("cpu", fp16))
    assert 0 < apart <= FP16_TOLERANCE
