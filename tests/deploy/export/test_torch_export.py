"""torch.export of the served model (what torch-tensorrt compiles): batch and time stay dynamic, outputs equal eager."""

from __future__ import annotations

import math
import re

import pytest
import torch

from qslr.deploy.export.tensor_sizes import TENSORRT_ELEMENT_LIMIT, TensorTooLargeError
from qslr.deploy.export.tensorrt_engine import ShapeRange, TensorRTUnavailableError
from qslr.deploy.export.torch_export import export_program, largest_tensor, shortest_time
from qslr.deploy.export.torch_trt import compile_torch_trt
from qslr.deploy.served import example_inputs, served_from_checkpoint

SHAPES = ShapeRange(min_batch=1, opt_batch=4, max_batch=16, min_time=5, opt_time=140, max_time=400)
# Both sides run the same float32 kernels on the same weights; 1e-5 still catches a padding leak (>= 1e-3).
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def served(checkpoint):
    return served_from_checkpoint(checkpoint, frame_size=(72, 72))[0]


@pytest.fixture(scope="module")
def program(served):
    return export_program(served, SHAPES)


@pytest.mark.slow
def test_batch_and_time_are_not_specialised(program):
    frames = next(node for node in program.graph.nodes if node.op == "placeholder" and node.name == "frames")
    batch, time = frames.meta["val"].shape[:2]
    for size, low, high in ((batch, 1, 16), (time, 5, 400)):
        assert isinstance(size, torch.SymInt), "a dynamic dimension was traced as a constant"
        bounds = program.range_constraints[size.node.expr]
        assert (int(bounds.lower), int(bounds.upper)) == (low, high)


@pytest.mark.parametrize(("batch", "time"), [(1, 5), (1, 8), (3, 57), (2, 300), (16, 33), (5, 400)])
def test_the_program_equals_eager_at_other_shapes(served, program, batch, time):
    assert_equal_outputs(served, program, *example_inputs(batch, time, 72, 72, seed=time))


def test_mixed_lengths_in_one_batch(served, program):
    frames, _ = example_inputs(4, 150, 72, 72, seed=3)
    assert_equal_outputs(served, program, frames, torch.tensor([150, 9, 77, 31]))


def test_needs_the_frame_size_and_two_output_steps(served, checkpoint):
    with pytest.raises(ValueError, match="frame size"):
        export_program(served_from_checkpoint(checkpoint)[0], SHAPES)
    # K5-P2-K5-P2: up to 4 frames give one output step, a size torch.export would specialise.
    assert shortest_time(served) == 5
    with pytest.raises(ValueError, match="from 5 frames up, the profile starts at 4"):
        export_program(served, ShapeRange(1, 4, 16, 4, 140, 400))


def assert_equal_outputs(served, program, frames, lengths):
    with torch.no_grad():
        expected, expected_lengths = served(frames, lengths)
        got, got_lengths = program.module()(frames, lengths)
    assert torch.equal(got_lengths, expected_lengths)
    for row, steps in enumerate(expected_lengths.tolist()):
        torch.testing.assert_close(got[row, :steps], expected[row, :steps], atol=TOLERANCE, rtol=0)


@pytest.mark.not_on_gpu("torch_tensorrt")
def test_without_torch_tensorrt_the_compile_says_so(checkpoint, tmp_path):
    with pytest.raises(TensorRTUnavailableError, match="torch-tensorrt|CUDA GPU"):
        compile_torch_trt(checkpoint, tmp_path / "m.ep", SHAPES, 72, 72)
    assert not (tmp_path / "m.ep").exists()


def test_the_fp16_program_states_its_precision(checkpoint):
    """What torch-tensorrt compiles at --fp16: half-precision convolutions and classifier, float32 LSTM layers,
    integer sizes, with no autocast pass left to guess (its casts reached SymInt sizes and integer indices)."""
    served = served_from_checkpoint(checkpoint, frame_size=(72, 72), precision="fp16")[0]
    program = export_program(served, SHAPES)
    calls = [node for node in program.graph.nodes if node.op == "call_function"]
    convolutions = [n for n in calls if n.target in (torch.ops.aten.conv2d.default, torch.ops.aten.conv1d.default)]
    lstms = [n for n in calls if n.target == torch.ops.qslr.lstm.default]
    assert len(convolutions) >= 5 and len(lstms) == 4
    assert {n.meta["val"].dtype for n in convolutions} == {torch.float16}
    for node in lstms:
        assert {arg.meta["val"].dtype for arg in node.args} == {torch.float32}
    linears = [n for n in calls if n.target == torch.ops.aten.linear.default]  # the encoder's and the classifier
    assert linears and {n.meta["val"].dtype for n in linears} == {torch.float16}
    outputs = [node for node in program.graph.nodes if node.op == "output"][0].args[0]
    assert [o.meta["val"].dtype for o in outputs] == [torch.float32, torch.int64]
    frames, _ = example_inputs(3, 57, 72, 72, seed=1)
    # fp16 kernels on both sides, in possibly different orders: well within fp16's step on these log-probabilities.
    with torch.no_grad():
        expected, expected_lengths = served(frames, torch.tensor([57, 20, 33]))
        got, got_lengths = program.module()(frames, torch.tensor([57, 20, 33]))
    assert torch.equal(got_lengths, expected_lengths)
    for row, steps in enumerate(expected_lengths.tolist()):
        torch.testing.assert_close(got[row, :steps], expected[row, :steps], atol=5e-3, rtol=0)


@pytest.mark.slow
def test_a_profile_with_a_tensor_over_tensorrts_limit_is_refused_before_torch_tensorrt_is_needed(checkpoint,
                                                                                                 tmp_path):
    # 16 clips of 20,000 frames of 72x72: the uint8 frames alone are 5.0e9 values.
    shapes = ShapeRange(min_batch=1, opt_batch=2, max_batch=16, min_time=5, opt_time=64, max_time=20_000)
    with pytest.raises(TensorTooLargeError, match=r"at 16x20000 the served program's tensor .* more than TensorRT "
                                                  r"holds in one tensor \(2,147,483,647\); the largest batch") as error:
        compile_torch_trt(checkpoint, tmp_path / "m.ep", shapes, 72, 72)
    assert not (tmp_path / "m.ep").exists()
    fits = int(re.search(r"the largest batch that fits at 20000 frames is (\d+)", str(error.value))[1])
    served, _ = served_from_checkpoint(checkpoint, frame_size=(72, 72))
    program = export_program(served, shapes)
    assert math.prod(largest_tensor(program, fits, 20_000)[1]) <= TENSORRT_ELEMENT_LIMIT
    assert math.prod(largest_tensor(program, fits + 1, 20_000)[1]) > TENSORRT_ELEMENT_LIMIT
    assert math.prod(largest_tensor(program, 1, 20_000)[1]) >= 20_000 * 72 * 72 * 3  # the frames themselves
