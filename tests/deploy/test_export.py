"""ONNX export: length-exact against PyTorch, batch-independent, TensorRT-parsable; TensorRT where present."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from deploy.graph_checks import operator_counts, tensorrt_problems
from deploy.onnx_export import (
    OUTPUTS,
    example_inputs,
    export_onnx,
    max_difference,
    onnx_session,
    read_metadata,
    served_from_checkpoint,
)
from deploy.tensorrt_engine import ShapeRange, TensorRTUnavailableError, profile_shapes, require_tensorrt
from tools.cli import cli

# float32 through a CNN, two temporal convolutions and a 2-layer BiLSTM: both runtimes agree to ~1e-6;
# 1e-4 leaves room for other CPUs' kernels while catching any padding leak (those are >= 1e-3).
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx(checkpoint, path, 72, 72)
    return path


@pytest.mark.parametrize("time", [8, 9, 16, 33, 57, 120, 300])
def test_onnxruntime_equals_pytorch_at_every_length(checkpoint, exported, time):
    served, _ = served_from_checkpoint(checkpoint)
    assert max_difference(served, onnx_session(exported), *example_inputs(1, time, 72, 72, seed=time)) < TOLERANCE


def test_mixed_length_batches_equal_each_sample_alone(checkpoint, exported):
    served, _ = served_from_checkpoint(checkpoint)
    session = onnx_session(exported)
    frames, _ = example_inputs(4, 150, 72, 72, seed=3)
    lengths = torch.tensor([150, 9, 77, 31])
    assert max_difference(served, session, frames, lengths) < TOLERANCE
    together, together_lengths = session.run(list(OUTPUTS), {"frames": frames.numpy(), "lengths": lengths.numpy()})
    for row, length in enumerate(lengths.tolist()):
        alone, alone_lengths = session.run(list(OUTPUTS), {"frames": frames[row:row + 1, :length].numpy(),
                                                           "lengths": np.array([length])})
        steps = int(alone_lengths[0])
        assert steps == together_lengths[row] == -(-length // 4)
        np.testing.assert_allclose(together[row, :steps], alone[0], atol=TOLERANCE)


def test_the_graph_is_tensorrt_parsable_and_carries_its_metadata(exported):
    assert tensorrt_problems(exported) == []
    assert "LSTM" in operator_counts(exported)  # LSTM ops over a dynamic time axis, not an unrolled loop
    metadata = read_metadata(exported)
    assert (metadata["qslr_height"], metadata["qslr_width"], metadata["qslr_crop_size"]) == ("72", "72", "64")
    assert int(metadata["qslr_num_classes"]) == len(__import__("json").loads(metadata["qslr_vocab"])) + 1


def test_top_k_outputs(checkpoint, tmp_path):
    path = tmp_path / "topk.onnx"
    export_onnx(checkpoint, path, 72, 72, top_k=3)
    frames, lengths = example_inputs(2, 40, 72, 72)
    log_probs, _, values, ids = onnx_session(path).run(None, {"frames": frames.numpy(), "lengths": lengths.numpy()})
    assert values.shape[-1] == ids.shape[-1] == 3
    np.testing.assert_allclose(np.take_along_axis(log_probs, ids, -1), values, atol=1e-6)


def test_export_command_checks_parity(checkpoint, tmp_path):
    result = CliRunner().invoke(cli, ["export", "onnx", "--checkpoint", str(checkpoint), "--out",
                                      str(tmp_path / "m.onnx")])
    assert result.exit_code == 0, result.output
    assert "onnxruntime vs PyTorch: max |difference|" in result.output and "warning" not in result.output


def test_profile_shapes():
    shapes = ShapeRange.parse("1x16", "4x140", "16x300")
    assert profile_shapes(shapes, 256, 256) == {
        "frames": ((1, 16, 256, 256, 3), (4, 140, 256, 256, 3), (16, 300, 256, 256, 3)),
        "lengths": ((1,), (4,), (16,)),
    }
    with pytest.raises(ValueError, match="need 1 <= min <= opt <= max"):
        ShapeRange.parse("4x16", "2x140", "16x300")
    with pytest.raises(ValueError, match="expected BATCHxFRAMES"):
        ShapeRange.parse("4", "2x140", "16x300")


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available(),
                    reason="TensorRT and a GPU are present here")
def test_without_tensorrt_the_commands_say_so(exported, tmp_path):
    with pytest.raises(TensorRTUnavailableError):
        require_tensorrt()
    result = CliRunner().invoke(cli, ["export", "tensorrt", "--onnx", str(exported), "--out", str(tmp_path / "m.plan")])
    assert result.exit_code == 1 and ("TensorRT is not installed" in result.output or "CUDA GPU" in result.output)
    assert not (tmp_path / "m.plan").exists()


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None or not torch.cuda.is_available(),
                    reason="needs TensorRT and a CUDA GPU, which cannot be installed on the CPU CI machine")
def test_tensorrt_engine_matches_onnxruntime(exported, tmp_path):
    from deploy.tensorrt_engine import build_engine, engine_parity

    shapes = ShapeRange(1, 2, 4, 16, 64, 128)
    plan = build_engine(exported, tmp_path / "m.plan", shapes, 72, 72, fp16=False, timing_cache=tmp_path / "cache")
    frames, lengths = example_inputs(2, 64, 72, 72)
    assert engine_parity(plan, exported, frames.numpy(), lengths.numpy()) < 1e-3
