"""torch-tensorrt compilation of the served model, for use inside PyTorch (GPU machines only)."""

from __future__ import annotations

from pathlib import Path

import torch

from deploy.onnx_export import example_inputs, served_from_checkpoint
from deploy.tensorrt_engine import ShapeRange, TensorRTUnavailableError


def compile_torch_trt(checkpoint: str | Path, out: str | Path, shapes: ShapeRange, height: int, width: int,
                      fp16: bool = True) -> Path:
    try:
        import torch_tensorrt
    except ImportError as exc:
        raise TensorRTUnavailableError(f"torch-tensorrt is not installed ({exc}); it needs an NVIDIA GPU machine: "
                                       f"pip install -e '.[tensorrt]'") from None
    if not torch.cuda.is_available():
        raise TensorRTUnavailableError("torch-tensorrt needs a CUDA GPU, and none is available here")
    served, _ = served_from_checkpoint(checkpoint)
    served = served.cuda().eval()
    inputs = [
        torch_tensorrt.Input(min_shape=(shapes.min_batch, shapes.min_time, height, width, 3),
                             opt_shape=(shapes.opt_batch, shapes.opt_time, height, width, 3),
                             max_shape=(shapes.max_batch, shapes.max_time, height, width, 3), dtype=torch.uint8),
        torch_tensorrt.Input(min_shape=(shapes.min_batch,), opt_shape=(shapes.opt_batch,),
                             max_shape=(shapes.max_batch,), dtype=torch.int64),
    ]
    precisions = {torch.float16, torch.float32} if fp16 else {torch.float32}
    compiled = torch_tensorrt.compile(served, ir="dynamo", inputs=inputs, enabled_precisions=precisions)
    frames, lengths = example_inputs(shapes.opt_batch, shapes.opt_time, height, width)
    out = Path(out)
    torch_tensorrt.save(compiled, str(out), inputs=[frames.cuda(), lengths.cuda()])
    return out
