"""ONNX export: length-exact against PyTorch, batch-independent, TensorRT-parsable; TensorRT where present."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

from qslr.deploy.export.graph_checks import operator_counts, tensorrt_problems
from qslr.deploy.export.onnx_export import export_onnx, max_difference, onnx_session, read_metadata
from qslr.deploy.export.tensorrt_engine import ShapeRange, TensorRTUnavailableError, profile_shapes, require_tensorrt
from qslr.deploy.served import example_inputs, served_from_checkpoint
from qslr.deploy.tensor_names import OUTPUTS
from qslr.tools.cli import cli

# float32 through a CNN, two temporal convolutions and a 2-layer BiLSTM: both runtimes agree to ~1e-6;
# 1e-4 leaves room for other CPUs' kernels while catching any padding leak (those are >= 1e-3).
TOLERANCE = 1e-4
# The fp16 graph against PyTorch, either precision: measured up to 1.2e-4 on this model (fp16's relative step is
# 2^-11, ~5e-4, on log-probabilities of magnitude ~1 here); 5e-3 leaves room for other kernels' rounding order
# and is still below a padding leak's error.
FP16_TOLERANCE = 5e-3


@pytest.fixture(scope="module")
def exported_fp16(checkpoint, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "model.fp16.onnx"
    assert export_onnx(checkpoint, path, 72, 72, precision="fp16").precision == "fp16"
    return path


@pytest.mark.parametrize("time", [8, 9, 16, 33, 57, 120, 300])
def test_onnxruntime_equals_pytorch_at_every_length(checkpoint, fp32_graph, time):
    served, _ = served_from_checkpoint(checkpoint)
    assert max_difference(served, onnx_session(fp32_graph), *example_inputs(1, time, 72, 72, seed=time)) < TOLERANCE


def test_mixed_length_batches_equal_each_sample_alone(checkpoint, fp32_graph):
    served, _ = served_from_checkpoint(checkpoint)
    session = onnx_session(fp32_graph)
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


def test_the_graph_is_tensorrt_parsable_and_carries_its_metadata(fp32_graph):
    assert tensorrt_problems(fp32_graph) == []
    assert "LSTM" in operator_counts(fp32_graph)  # LSTM ops over a dynamic time axis, not an unrolled loop
    metadata = read_metadata(fp32_graph)
    assert (metadata["qslr_height"], metadata["qslr_width"], metadata["qslr_crop_size"]) == ("72", "72", "64")
    assert int(metadata["qslr_num_classes"]) == len(__import__("json").loads(metadata["qslr_vocab"])) + 1


def test_top_k_outputs(checkpoint, tmp_path):
    path = tmp_path / "topk.onnx"
    export_onnx(checkpoint, path, 72, 72, top_k=3)
    frames, lengths = example_inputs(2, 40, 72, 72)
    log_probs, _, values, ids = onnx_session(path).run(None, {"frames": frames.numpy(), "lengths": lengths.numpy()})
    assert values.shape == ids.shape == (*log_probs.shape[:2], 3)
    np.testing.assert_allclose(np.take_along_axis(log_probs, ids, -1), values, atol=1e-6)
    # The k best, best first: the values are the three largest of each step, in falling order, at distinct ids.
    np.testing.assert_allclose(values, -np.sort(-log_probs, axis=-1)[..., :3], atol=1e-6)
    assert (np.diff(values, axis=-1) <= 0).all()
    assert all(len(set(step)) == 3 for step in ids.reshape(-1, 3).tolist())


def test_export_command_checks_parity(checkpoint, tmp_path):
    result = CliRunner().invoke(cli, ["export", "onnx", "--checkpoint", str(checkpoint), "--out",
                                      str(tmp_path / "m.onnx")])
    assert result.exit_code == 0, result.output
    assert "onnxruntime (fp32) vs PyTorch (fp32): max |difference|" in result.output and "warning" not in result.output


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


@pytest.mark.not_on_gpu("tensorrt")
def test_without_tensorrt_the_commands_say_so(fp32_graph, tmp_path):
    with pytest.raises(TensorRTUnavailableError):
        require_tensorrt()
    result = CliRunner().invoke(cli, ["export", "tensorrt", "--onnx", str(fp32_graph), "--out",
                                      str(tmp_path / "m.plan")])
    assert result.exit_code == 1 and ("TensorRT is not installed" in result.output or "CUDA GPU" in result.output)
    assert not (tmp_path / "m.plan").exists()


@pytest.mark.gpu("tensorrt")
def test_tensorrt_engine_matches_onnxruntime(fp32_graph, tmp_path):
    from qslr.deploy.export.tensorrt_engine import build_engine, engine_parity

    shapes = ShapeRange(1, 2, 4, 16, 64, 128)
    plan = build_engine(fp32_graph, tmp_path / "m.plan", shapes, 72, 72, "fp32", timing_cache=tmp_path / "cache")
    frames, lengths = example_inputs(2, 64, 72, 72)
    assert engine_parity(plan, fp32_graph, frames.numpy(), lengths.numpy()) < 1e-3


@pytest.mark.gpu("tensorrt")
def test_fp16_tensorrt_engine_matches_onnxruntime(exported_fp16, tmp_path):
    from qslr.deploy.export.tensorrt_engine import build_engine, engine_parity, read_engine_record

    shapes = ShapeRange(1, 2, 4, 16, 64, 128)
    plan = build_engine(exported_fp16, tmp_path / "m.plan", shapes, 72, 72)
    assert read_engine_record(plan).precision == "fp16"
    frames, lengths = example_inputs(2, 64, 72, 72)
    assert engine_parity(plan, exported_fp16, frames.numpy(), lengths.numpy()) < FP16_TOLERANCE


def _value_types(path) -> dict[str, int]:
    graph = onnx.shape_inference.infer_shapes(onnx.load(str(path)), strict_mode=True).graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*graph.value_info, *graph.input, *graph.output)}
    types.update({t.name: t.data_type for t in graph.initializer})
    return types


def test_the_fp16_graph_states_its_precision(exported_fp16):
    model = onnx.load(str(exported_fp16))
    onnx.checker.check_model(model, full_check=True)  # every Cast's output labelled with the type it produces
    types, nodes = _value_types(exported_fp16), model.graph.node
    half, single = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    layers = [n for n in nodes if n.op_type in ("Conv", "Gemm", "MatMul", "MaxPool", "AveragePool")]
    lstms = [n for n in nodes if n.op_type == "LSTM"]
    assert len(layers) >= 5 and len(lstms) == 4
    # The frame encoder, temporal CNN and classifier take half-precision data and weights...
    for node in layers:
        assert {types[name] for name in node.input if name} == {half}, node.name
    # ...the BiLSTM's four one-directional layers stay float32, weights and state alike...
    for node in lstms:
        floats = [name for index, name in enumerate(node.input) if name and index != 4]  # 4: sequence_lens
        assert len(floats) >= 4 and {types[name] for name in floats} == {single}, node.name
    # ...and what leaves the graph is what leaves the fp32 graph.
    outputs = {v.name: v.type.tensor_type.elem_type for v in model.graph.output}
    assert outputs == {"log_probs": single, "output_lengths": onnx.TensorProto.INT64}
    assert read_metadata(exported_fp16)["qslr_precision"] == "fp16"
    assert tensorrt_problems(exported_fp16) == []


def test_the_fp16_graph_runs_in_onnxruntime_within_fp16_tolerance(checkpoint, exported_fp16):
    session = onnx_session(exported_fp16)
    half, _ = served_from_checkpoint(checkpoint, precision="fp16")
    single, _ = served_from_checkpoint(checkpoint)
    compared = 0
    for batch, time in ((1, 8), (1, 57), (3, 120), (2, 300)):
        frames, lengths = example_inputs(batch, time, 72, 72, seed=time)
        assert max_difference(half, session, frames, lengths) < FP16_TOLERANCE
        assert max_difference(single, session, frames, lengths) < FP16_TOLERANCE
        compared += 1
    assert compared == 4


def test_the_fp16_graph_is_batch_independent(exported_fp16):
    session = onnx_session(exported_fp16)
    frames, _ = example_inputs(3, 120, 72, 72, seed=5)
    lengths = np.array([120, 11, 64])
    together = session.run(list(OUTPUTS), {"frames": frames.numpy(), "lengths": lengths})[0]
    for row, length in enumerate(lengths.tolist()):
        alone, steps = session.run(list(OUTPUTS), {"frames": frames[row:row + 1, :length].numpy(),
                                                   "lengths": np.array([length])})
        np.testing.assert_allclose(together[row, :steps[0]], alone[0], atol=FP16_TOLERANCE)


def test_export_command_fp16_checks_both_precisions(checkpoint, tmp_path):
    out = tmp_path / "m16.onnx"
    result = CliRunner().invoke(cli, ["export", "onnx", "--checkpoint", str(checkpoint), "--out", str(out), "--fp16"])
    assert result.exit_code == 0, result.output
    assert "onnxruntime (fp16) vs PyTorch (fp32)" in result.output and "vs PyTorch (fp16)" in result.output
    result = CliRunner().invoke(cli, ["export", "check", str(out)])
    assert result.exit_code == 0 and '"tensorrt_problems": []' in result.output


def test_an_engine_of_another_precision_than_its_graph_is_refused(fp32_graph, exported_fp16, tmp_path):
    """TensorRT 11 runs a graph in its own types: the flag cannot lower a float32 graph (checked before
    TensorRT is needed, so on any machine)."""
    for graph, flag, stated in ((fp32_graph, "--fp16", "fp32"), (exported_fp16, "--fp32", "fp16")):
        result = CliRunner().invoke(cli, ["export", "tensorrt", "--onnx", str(graph), "--out",
                                          str(tmp_path / "m.plan"), flag])
        assert result.exit_code == 1
        assert f"the graph's precision is {stated}," in result.output and "qslr export onnx --" in result.output
        assert not (tmp_path / "m.plan").exists()
