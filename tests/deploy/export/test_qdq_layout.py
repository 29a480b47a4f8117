"""The INT8 graph's layout: on a network with residual blocks (a block's input read by two convolutions and by the
skip connection), onnxruntime's own quantiser leaves convolutions that onnxruntime then runs in float32; after
`arrange_for_onnxruntime` it runs every one of them in INT8, with the same outputs and TensorRT's rules kept."""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from qslr.deploy.export.graph_checks import tensorrt_problems
from qslr.deploy.export.int8_export import QUANTISED_OPS, quantise_convolutions
from qslr.deploy.export.qdq_layout import arrange_for_onnxruntime, onnxruntime_fusion


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
        super().__init__(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), _Block(8, 8, 1), _Block(8, 16, 2), _Block(16, 16, 1),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5))


class _RandomImages:
    def __init__(self, batches: int):
        rng = np.random.default_rng(0)
        self._feeds = iter([{"images": rng.random((2, 3, 32, 32), dtype=np.float32)} for _ in range(batches)])

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


def _arranged(int8: Path, out: Path):
    model = onnx.load(str(int8))
    arrangement = arrange_for_onnxruntime(model, QUANTISED_OPS)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(out))
    return arrangement


def _run(path: Path, images: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": images})[0]


def test_every_convolution_runs_in_int8_after_the_arrangement(quantised, tmp_path):
    _, int8 = quantised
    before = onnxruntime_fusion(int8, tmp_path)
    assert before.total == 8
    # What the arrangement is for: the block inputs read by several nodes keep their convolutions in float32.
    assert before.int8 < before.total
    arranged = tmp_path / "arranged.onnx"
    arrangement = _arranged(int8, arranged)
    # The skip connections of the two blocks without downsampling read float; the downsampling block's input
    # gets a second pair, one for its first and one for its 1x1 convolution.
    assert (arrangement.float_readers, arrangement.own_pairs) == (2, 1)
    assert onnxruntime_fusion(arranged, tmp_path) == type(before)(8, 8)


def test_the_arrangement_keeps_each_convolution_s_quantisation_and_tensorrt_s_rules(quantised, tmp_path):
    fp32, int8 = quantised
    arranged = tmp_path / "arranged.onnx"
    _arranged(int8, arranged)

    def conv_inputs(path: Path) -> dict[str, tuple[float, int]]:
        graph = onnx.load(str(path)).graph
        constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        made_by = {o: n for n in graph.node for o in n.output}
        found = {}
        for conv in (n for n in graph.node if n.op_type == "Conv"):
            dq = made_by[conv.input[0]]
            q = made_by[dq.input[0]]
            assert q.op_type == "QuantizeLinear" and list(q.input[1:]) == list(dq.input[1:]), conv.name
            found[conv.name] = (float(constants[q.input[1]]), int(constants[q.input[2]]))
        return found

    assert conv_inputs(arranged) == conv_inputs(int8)
    graph = onnx.load(str(arranged)).graph
    made_by = {o: n for n in graph.node for o in n.output}
    adds = [n for n in graph.node if n.op_type == "Add"]
    assert len(adds) == 3
    for add in adds:  # an Add reads int8 values only where a convolution's output was quantised
        for dq in (made_by[i] for i in add.input if made_by[i].op_type == "DequantizeLinear"):
            assert made_by[made_by[dq.input[0]].input[0]].op_type == "Conv", add.name
    readers = Counter(i for n in graph.node for i in n.input)
    assert all(readers[n.output[0]] == 1 for n in graph.node if n.op_type == "QuantizeLinear")
    assert tensorrt_problems(arranged) == []

    images = np.random.default_rng(1).random((3, 3, 32, 32), dtype=np.float32)
    reference, before, after = _run(fp32, images), _run(int8, images), _run(arranged, images)
    # The skip connections now add exact values instead of ones rounded to int8: no further from float32.
    assert np.abs(after - reference).max() <= np.abs(before - reference).max() * 1.5 + 1e-6
    assert np.abs(after - reference).max() < 0.05 * np.abs(reference).max()
