"""The INT8 graph's layout, on a network with a max-pooled stem and residual blocks (one of them downsampling): the
saved QDQ graph is TensorRT's (each residual addition reads its convolution branch straight, its skip operand
dequantised) and runs its ReLUs, additions and the convolutions before them in float32 in onnxruntime; lowered by
`for_onnxruntime` (the convolution branch's pair put back at its calibrated scale, UINT8 for what cannot be negative)
every convolution, addition and ReLU of it runs in INT8, with the same outputs."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from qslr.deploy.export.export_checks import onnxruntime_fusion
from qslr.deploy.export.graph_checks import tensorrt_problems
from qslr.deploy.export.int8_export import quantise_convolutions
from qslr.deploy.export.onnxruntime_session import onnxruntime_graph
from qslr.deploy.export.qdq_layout import ONNXRUNTIME_SCALES, for_onnxruntime


class _Block(nn.Module):
    """ResNet's basic block: two 3x3 convolutions and a skip connection, downsampled by a 1x1 convolution when
    the stride is 2."""

    def __init__(self, channels_in: int, channels_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, stride, 1)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, 1, 1)
        self.downsample = nn.Conv2d(channels_in, channels_out, 1, stride) if stride > 1 else None

    def forward(self, x):
        skip = x if self.downsample is None else self.downsample(x)
        return torch.relu(self.conv2(torch.relu(self.conv1(x))) + skip)


class _Residual(nn.Sequential):
    def __init__(self):
        super().__init__(nn.Conv2d(3, 8, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(3, 2, 1), _Block(8, 8, 1), _Block(8, 16, 2),
                         _Block(16, 16, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5))


class _RandomImages:
    """A calibration reader as `quantise_convolutions` reads one: sized, and a range of runs at a time."""

    def __init__(self, batches: int):
        rng = np.random.default_rng(0)
        # Signed, as normalised frames are: the stem convolution's input must stay INT8.
        self._runs = [{"images": rng.random((2, 3, 32, 32), dtype=np.float32) - 0.5} for _ in range(batches)]
        self._feeds = iter(self._runs)
        self.ranges: list[tuple[int, int]] = []

    def __len__(self):
        return len(self._runs)

    def set_range(self, start_index: int, end_index: int):
        self.ranges.append((start_index, end_index))
        self._feeds = iter(self._runs[start_index:end_index])

    def get_next(self):
        return next(self._feeds, None)


@pytest.fixture(scope="module")
def quantised(tmp_path_factory) -> tuple[Path, Path]:
    """The residual network in float32 and as onnxruntime's quantiser writes it."""
    work = tmp_path_factory.mktemp("qdq")
    torch.manual_seed(0)
    fp32 = work / "fp32.onnx"
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation: it is the one QSLR exports with
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(_Residual().eval(), (torch.rand(2, 3, 32, 32),), str(fp32), input_names=["images"],
                          output_names=["scores"], dynamic_axes={"images": {0: "batch"}}, opset_version=17,
                          dynamo=False)
    int8 = work / "quantiser.onnx"
    quantise_convolutions(fp32, int8, _RandomImages(4))
    return fp32, int8


def _plain_fusion(path: Path, work: Path):
    """What onnxruntime makes of the saved graph itself, without QSLR's lowering."""
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(work / "plain.optimised.onnx")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node]


def _run(model: str | bytes | Path, inputs: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(model) if isinstance(model, Path) else model,
                                   providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: inputs})[0]


def test_lowered_for_onnxruntime_every_convolution_addition_and_relu_runs_in_int8(quantised, tmp_path):
    _, int8 = quantised
    assert tensorrt_problems(int8) == []  # the saved graph is TensorRT's
    plain = _plain_fusion(int8, tmp_path)
    # What the lowering is for: as saved, onnxruntime cannot fold a ReLU into an INT8 QuantizeLinear, so a
    # convolution followed by one runs in float32 with it (FusedConv); a convolution read straight by its residual
    # addition, as TensorRT wants it, has no QuantizeLinear to fuse with; the additions and their ReLUs stay float.
    assert plain.count("FusedConv") == 4 and plain.count("Conv") == 4 and plain.count("QLinearConv") == 0
    assert plain.count("Add") == 3 and plain.count("Relu") == 3
    fusion = onnxruntime_fusion(int8, tmp_path)
    assert (fusion.int8, fusion.total) == (8, 8)
    kinds = [n.op_type for n in onnx.load(str(tmp_path / f"{int8.stem}.optimised.onnx")).graph.node]
    assert kinds.count("QLinearAdd") == 3 and kinds.count("Add") == 0  # the residual additions
    assert fusion.float_relus == 0
    # The pooling of the last block's output too; the float classifier reads its DequantizeLinear.
    assert "QLinearGlobalAveragePool" in kinds


def test_each_residual_addition_reads_its_convolution_branch_straight(quantised):
    """TensorRT's placement in the file: the convolution branch (in the downsampling block the longer path, not
    the 1x1 shortcut) goes into the Add with no pair between them, the skip operand through a DequantizeLinear;
    the scale calibrated for the branch is kept in the metadata, and nothing unread is left behind."""
    _, int8 = quantised
    model = onnx.load(str(int8))
    graph = model.graph
    made_by = {output: node for node in graph.node for output in node.output}
    additions = [node for node in graph.node if node.op_type == "Add"]
    assert len(additions) == 3
    branches = []
    for add in additions:
        branch, skip = (made_by[name] for name in add.input)
        assert branch.op_type == "Conv" and skip.op_type == "DequantizeLinear", add.name
        branches.append(branch.output[0])
    shortcut = made_by[made_by[made_by[additions[1].input[1]].input[0]].input[0]]
    assert shortcut.op_type == "Conv" and shortcut.name.startswith("/4/downsample"), shortcut.name
    assert [made_by[i].name for i in additions[1].input[:1]] == ["/4/conv2/Conv"]
    scales = json.loads({p.key: p.value for p in model.metadata_props}[ONNXRUNTIME_SCALES])
    assert sorted(scales) == sorted(branches) and all(scale > 0 for scale in scales.values())
    read = {name for node in graph.node for name in node.input}
    assert all(t.name in read for t in graph.initializer)


def _quantisers(model: onnx.ModelProto) -> dict[str, tuple[int, float, str]]:
    """Per QuantizeLinear: (zero point type, scale, the op type that made its input)."""
    graph = model.graph
    constants = {t.name: t for t in graph.initializer}
    made_by = {o: n.op_type for n in graph.node for o in n.output}
    return {n.name: (constants[n.input[2]].data_type, float(numpy_helper.to_array(constants[n.input[1]])),
                     made_by.get(n.input[0], "input")) for n in graph.node if n.op_type == "QuantizeLinear"}


def test_the_lowering_stores_only_non_negative_tensors_unsigned_at_their_scale(quantised):
    _, int8 = quantised
    model = onnx.load(str(int8))
    before = _quantisers(model)
    scales = json.loads({p.key: p.value for p in model.metadata_props}[ONNXRUNTIME_SCALES])
    lowering = for_onnxruntime(model)
    onnx.checker.check_model(model, full_check=True)
    after = _quantisers(model)
    restored = after.keys() - before.keys()
    assert lowering.restored == len(restored) == 3 and before.keys() <= after.keys()
    assert lowering.unsigned + lowering.signed == len(after)
    for name, (zero_type, scale, maker) in after.items():
        # The grid is unchanged; the restored pairs' is the one calibrated for each convolution branch.
        assert scale == (before[name][1] if name in before else np.float32(scales[maker_output(model, name)])), name
        non_negative = maker in ("Relu", "MaxPool", "GlobalAveragePool", "Flatten")
        assert zero_type == (onnx.TensorProto.UINT8 if non_negative else onnx.TensorProto.INT8), (name, maker)
    # The image (signed), and the additions' operands (made by each block's second convolution and by the
    # downsampling one, before the ReLU) stay INT8.
    assert lowering.signed == 1 + 3 + 1
    readers = {i for n in model.graph.node for i in n.input}
    assert all(t.name in readers for t in model.graph.initializer)  # no replaced zero point is left behind


def maker_output(model: onnx.ModelProto, quantiser: str) -> str:
    """The tensor the QuantizeLinear named ``quantiser`` quantises."""
    return next(node.input[0] for node in model.graph.node if node.name == quantiser)


def test_the_lowered_graph_computes_what_the_saved_one_does(quantised):
    fp32, int8 = quantised
    images = np.random.default_rng(1).random((3, 3, 32, 32), dtype=np.float32) - 0.5
    lowered, saved, reference = _run(onnxruntime_graph(int8), images), _run(int8, images), _run(fp32, images)
    # The same integers on the same grids; what differs is where onnxruntime's fused kernels round.
    scale = np.abs(reference).max()
    assert np.abs(lowered - saved).max() < 0.01 * scale
    assert np.abs(lowered - reference).max() < 0.05 * scale


def test_a_float_graph_is_given_to_onnxruntime_as_its_file(quantised):
    fp32, _ = quantised
    assert onnxruntime_graph(fp32) == str(fp32)


def test_calibration_reads_one_run_at_a_time(quantised, tmp_path):
    # So that a histogram calibrator holds one run's activations, not every run's (22 GB for 8 clips at 224x224).
    fp32, _ = quantised
    reader = _RandomImages(3)
    quantise_convolutions(fp32, tmp_path / "strided.onnx", reader)
    assert reader.ranges == [(0, 1), (1, 2), (2, 3)]


def test_the_lowering_keeps_graph_outputs_and_completes_dequantisers_without_a_zero_point():
    """Shapes onnxruntime's quantiser does not write, and other tools may: a DequantizeLinear without its zero
    point, a QuantizeLinear without one (UINT8 already), a quantised tensor that is a graph output."""
    helper, scale = onnx.helper, numpy_helper.from_array(np.float32(0.05), "scale")
    zero = numpy_helper.from_array(np.int8(0), "zero")
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("QuantizeLinear", ["r", "scale", "zero"], ["q1"]),
             helper.make_node("DequantizeLinear", ["q1", "scale"], ["d1"]),
             helper.make_node("QuantizeLinear", ["r", "scale"], ["q2"]),
             helper.make_node("DequantizeLinear", ["q2", "scale"], ["d2"]),
             helper.make_node("Add", ["d1", "d2"], ["y"]),
             helper.make_node("QuantizeLinear", ["r", "scale", "zero"], ["q3"])]
    graph = helper.make_graph(nodes, "edges", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 6])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 6]),
                               helper.make_tensor_value_info("q3", onnx.TensorProto.INT8, [1, 6])], [scale, zero])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.array([[-1.0, 0.0, 0.02, 1.0, 3.0, 6.0]], np.float32)
    before = _run(model.SerializeToString(), x)
    lowering = for_onnxruntime(model)
    onnx.checker.check_model(model, full_check=True)
    assert (lowering.unsigned, lowering.signed) == (1, 1)  # q1 moved; q3, a graph output, kept; q2 was UINT8
    (d1,) = [n for n in model.graph.node if n.output[0] == "d1"]
    assert len(d1.input) == 3 and d1.input[2] == "q1_uint8_zero_point"
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    after, q3 = session.run(None, {"x": x})
    assert q3.dtype == np.int8
    np.testing.assert_array_equal(after, before)
