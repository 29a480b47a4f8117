"""The served signature's graph: what TensorRT's ONNX parser asks of a uint8 input."""

from __future__ import annotations

import onnx

from qslr.deploy.export.onnx_export import export_onnx

FLOATS = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE}


def test_the_uint8_frames_feed_only_a_cast_to_float(checkpoint, tmp_path):
    # TensorRT accepts a UINT8 network input only when a Cast consumes it directly (NVIDIA/TensorRT#3985),
    # and its Slice and Gather importers refuse UINT8 tensors anywhere.
    path = tmp_path / "model.onnx"
    export_onnx(checkpoint, path, 72, 72)
    graph = onnx.shape_inference.infer_shapes(onnx.load(str(path)), strict_mode=True).graph
    consumers = [node for node in graph.node if "frames" in node.input]
    assert consumers, "nothing reads the frames"
    for node in consumers:
        target = next((a.i for a in node.attribute if a.name == "to"), None)
        assert node.op_type == "Cast" and target in FLOATS, f"frames feed {node.op_type} {node.name}"
    typed = [*graph.input, *graph.value_info, *graph.output]
    uint8 = [v.name for v in typed if v.type.tensor_type.elem_type == onnx.TensorProto.UINT8]
    uint8 += [t.name for t in graph.initializer if t.data_type == onnx.TensorProto.UINT8]
    uint8 += [node.output[0] for node in graph.node if node.op_type == "Constant"
              and any(a.t.data_type == onnx.TensorProto.UINT8 for a in node.attribute)]
    assert uint8 == ["frames"]
