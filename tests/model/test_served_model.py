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


def test_the_pixel_mapping_is_the_checkpoints(checkpoint):
    """The served model maps pixels as the checkpoint's input section says, not by a constant of its own."""
    import dataclasses

    import numpy as np
    import torch

    from qslr.deploy.served import served_from_checkpoint
    from qslr.model.served_model import ServedModel
    from qslr.pipelines.augmentation import PIXEL_OFFSET, PIXEL_SCALE, ClipPlan, apply_plan

    served, extra = served_from_checkpoint(checkpoint)
    spec = extra["input"]
    assert (served.pixel_offset, served.pixel_scale) == (spec.pixel_offset, spec.pixel_scale) == \
        (PIXEL_OFFSET, PIXEL_SCALE)
    frames = torch.randint(0, 256, (1, 5, 72, 72, 3), dtype=torch.uint8)
    images = served.padded_images(frames, torch.tensor([5]))
    # The evaluation loader's own mapping of the same centre crop (no flip, no jitter).
    offset = (72 - spec.crop_size) // 2
    plan = ClipPlan(order=np.arange(5, dtype=np.int32), crop_y=offset, crop_x=offset, flip=False)
    expected = torch.from_numpy(apply_plan(frames[0].numpy(), plan, spec.crop_size))
    torch.testing.assert_close(images[served.left:served.left + 5], expected, atol=1e-6, rtol=0)
    other = dataclasses.replace(spec, pixel_offset=0.0, pixel_scale=255.0)
    rescaled = ServedModel(served.model, other.crop_size, pixel_offset=other.pixel_offset,
                           pixel_scale=other.pixel_scale).padded_images(frames, torch.tensor([5]))
    torch.testing.assert_close(rescaled, (images * PIXEL_SCALE + PIXEL_OFFSET) / 255.0, atol=1e-5, rtol=0)
