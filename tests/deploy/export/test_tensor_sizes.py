"""Tensor sizes at an engine profile's largest shapes, against the 2^31-1 elements TensorRT holds in one tensor, and
`qslr export tensorrt` refusing a profile over it in one line before TensorRT is needed.

The graph these tests size is built by hand and costs nothing: the served graph's front (each clip padded to its
length rounded up to 4 plus 12, its frames gathered by an index computed from the input's shape through a Range, put
channels first) and ResNet-18's stem (64 7x7 convolutions of stride 2, a ReLU). Exported for real at 224x224, the
phoenix2014-vac preset's served graph has the same largest tensor (the stem's output, 6592 x 64 x 112 x 112 at
16 x 400) and the same largest batch (6); an export of it costs 4-5 s here, the hand-built graph nothing.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from qslr.deploy.export.tensor_sizes import (
    TENSORRT_ELEMENT_LIMIT,
    TensorTooLargeError,
    check_profile_size,
    largest_batch,
    tensor_sizes,
)
from qslr.deploy.export.tensorrt_engine import fitting_profile
from qslr.tools.cli import cli

STEM_OUTPUT = "stem_conv"


def stem_graph(size: int = 224) -> onnx.ModelProto:
    """frames (B, T, size, size, 3) uint8 -> ResNet-18's stem on every padded frame -> pooled features."""
    def ints(name, values):
        return numpy_helper.from_array(np.array(values, np.int64), name)

    constants = [ints("one", [1]), ints("three", [3]), ints("four", [4]), ints("margin", [12]),
                 ints("zero_scalar", 0), ints("one_scalar", 1), ints("flat", [-1]),
                 ints("frame_shape", [-1, size, size, 3]),
                 numpy_helper.from_array(np.zeros((64, 3, 7, 7), np.float32), "stem_weight")]
    nodes = [
        helper.make_node("Cast", ["frames"], ["pixels"], to=TensorProto.FLOAT),
        helper.make_node("Shape", ["pixels"], ["batch"], start=0, end=1),
        helper.make_node("Shape", ["pixels"], ["time"], start=1, end=2),
        # The padded length: time rounded up to the temporal stride (4), plus the kernels' margin (12).
        helper.make_node("Add", ["time", "three"], ["time_up"]),
        helper.make_node("Div", ["time_up", "four"], ["strides"]),
        helper.make_node("Mul", ["strides", "four"], ["rounded"]),
        helper.make_node("Add", ["rounded", "margin"], ["padded"]),
        helper.make_node("Squeeze", ["padded"], ["padded_scalar"]),
        helper.make_node("Range", ["zero_scalar", "padded_scalar", "one_scalar"], ["steps"]),
        helper.make_node("Concat", ["batch", "one"], ["column"], axis=0),
        helper.make_node("Reshape", ["lengths", "column"], ["lengths_column"]),
        helper.make_node("Min", ["steps", "lengths_column"], ["index"]),  # (B, T'): data-dependent values
        helper.make_node("Reshape", ["index", "flat"], ["index_flat"]),
        helper.make_node("Reshape", ["pixels", "frame_shape"], ["all_frames"]),
        helper.make_node("Gather", ["all_frames", "index_flat"], ["gathered"], axis=0),
        helper.make_node("Transpose", ["gathered"], ["images"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["images", "stem_weight"], [STEM_OUTPUT], kernel_shape=[7, 7], strides=[2, 2],
                         pads=[3, 3, 3, 3]),
        helper.make_node("Relu", [STEM_OUTPUT], ["stem"]),
        helper.make_node("GlobalAveragePool", ["stem"], ["features"]),
    ]
    graph = helper.make_graph(nodes, "stem", [helper.make_tensor_value_info("frames", TensorProto.UINT8,
                                                                            ["B", "T", size, size, 3]),
                                              helper.make_tensor_value_info("lengths", TensorProto.INT64, ["B"])],
                              [helper.make_tensor_value_info("features", TensorProto.FLOAT, None)], constants)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for key, value in (("qslr_height", str(size)), ("qslr_width", str(size)), ("qslr_precision", "fp32")):
        model.metadata_props.add(key=key, value=value)
    return model


@pytest.fixture(scope="module")
def stem_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("stem") / "stem.onnx"
    onnx.save(stem_graph(), str(path))
    return path


def test_the_frame_count_computed_through_a_range_is_sized():
    model = stem_graph()
    # ONNX's whole-graph inference, even with data propagation, loses the frame count at the Range.
    given = onnx.ModelProto()
    given.CopyFrom(model)
    for value, dims in zip(given.graph.input, ((16, 400, 224, 224, 3), (16,)), strict=True):
        for dim, size in zip(value.type.tensor_type.shape.dim, dims, strict=True):
            dim.dim_value = size
    inferred = onnx.shape_inference.infer_shapes(given, data_prop=True).graph.value_info
    (stem,) = [v for v in inferred if v.name == STEM_OUTPUT]
    assert not stem.type.tensor_type.shape.dim[0].HasField("dim_value")
    sizes = tensor_sizes(model, 16, 400, 224, 224)
    assert sizes.unsized == ()
    assert (sizes.largest.name, sizes.largest.shape) == (STEM_OUTPUT, (16 * 412, 64, 112, 112))
    assert sizes.largest.elements == 5_292_163_072 > TENSORRT_ELEMENT_LIMIT
    assert tensor_sizes(model, 6, 400, 224, 224).largest.elements <= TENSORRT_ELEMENT_LIMIT
    assert tensor_sizes(model, 7, 400, 224, 224).largest.elements > TENSORRT_ELEMENT_LIMIT
    assert largest_batch(model, 400, 224, 224, 16) == 6
    assert largest_batch(model, 400, 224, 224, 4) == 4  # never more than asked for
    assert largest_batch(model, 400, 224, 224, 16, limit=1000) == 0


def test_every_tensor_of_the_served_graph_is_sized(fp32_graph):
    sizes = tensor_sizes(onnx.load(str(fp32_graph), load_external_data=False), 16, 400, 72, 72)
    assert sizes.unsized == ()
    # The small CNN's largest tensor is its input made float (16 x 400 x 72 x 72 x 3).
    assert sizes.largest.elements == 16 * 400 * 72 * 72 * 3


def test_a_profile_over_the_limit_is_refused_naming_the_tensor_and_what_fits(stem_path):
    with pytest.raises(TensorTooLargeError) as refused:
        check_profile_size(stem_path, 16, 400, 224, 224)
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"{stem_path}: at 16x400 its tensor 'stem_conv' (6592x64x112x112)")
    assert "5,292,163,072 elements" in message
    assert "the largest batch that fits at 400 frames is 6 (--max 6x400)" in message
    check_profile_size(stem_path, 6, 400, 224, 224)
    with pytest.raises(TensorTooLargeError, match="not even one clip of 400 frames fits"):
        check_profile_size(stem_path, 2, 400, 224, 224, limit=10**6)


def test_export_tensorrt_refuses_the_16x400_profile_at_224x224_in_one_line(stem_path, tmp_path):
    """Before TensorRT is needed, so on any machine."""
    result = CliRunner().invoke(cli, ["export", "tensorrt", "--onnx", str(stem_path), "--out", str(tmp_path / "m.plan"),
                                      "--max", "16x400"])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
    assert "its tensor 'stem_conv' (6592x64x112x112)" in result.output and "(--max 6x400)" in result.output
    assert not (tmp_path / "m.plan").exists()


@pytest.mark.not_on_gpu("tensorrt")
def test_the_default_profile_is_lowered_to_the_largest_batch_that_fits(stem_path, tmp_path):
    """The defaults fit: `qslr export tensorrt` without --max builds up to 6x400 here (16x400 covers the served
    limits, whose visual batch `qslr triton build` then takes from the engine), and stops only where TensorRT is
    missing."""
    assert fitting_profile(stem_path, 224, 224).shapes() == ("1x16", "4x140", "6x400")
    result = CliRunner().invoke(cli, ["export", "tensorrt", "--onnx", str(stem_path), "--out",
                                      str(tmp_path / "m.plan")])
    assert "profile up to 6x400: at 16x400 a tensor of stem.onnx would hold more elements" in result.output
    assert result.exit_code == 1 and "TensorRT is not installed" in result.output
