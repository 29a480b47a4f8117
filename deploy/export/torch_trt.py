"""torch-tensorrt compilation of the served model, for use inside PyTorch (GPU machines only).

The program compiled is the one `deploy.export.torch_export` traces (tested on CPU); what needs torch-tensorrt and a
GPU is kept to this module. The BiLSTM's layers stay PyTorch operators (`qslr::lstm`, cuDNN on the GPU):
TensorRT has no converter for them, and the aten LSTM would be unrolled over a fixed number of frames. A
saved program therefore needs `model.unpacked_bilstm` imported before `torch.export.load`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from qslr.deploy import tensor_names as names
from qslr.deploy.export.tensorrt_engine import ShapeRange, TensorRTUnavailableError, profile_shapes
from qslr.deploy.export.torch_export import dynamic_shapes, export_example, export_program
from qslr.deploy.served import served_from_checkpoint
from qslr.pipelines.atomic_output import atomic_path


@dataclass(frozen=True)
class CompiledProgram:
    """torch-tensorrt's compilation of the served model (``module``, run in this process as it is) and the model it
    was compiled from (``served``), whose example inputs its saved form is traced with."""

    module: torch.nn.Module
    served: torch.nn.Module


def check_program_size(checkpoint: str | Path, shapes: ShapeRange, height: int, width: int) -> None:
    """Refuse, in one line naming the tensor and the largest batch that fits, a profile under which the served
    program holds a tensor TensorRT cannot (`tensor_sizes`, which `qslr export tensorrt` applies to a graph)."""
    from qslr.deploy.export.tensor_sizes import TENSORRT_ELEMENT_LIMIT, TensorTooLargeError
    from qslr.deploy.export.torch_export import largest_tensor

    served, _ = served_from_checkpoint(checkpoint, frame_size=(height, width))
    program = export_program(served, shapes)

    def fits(batch: int) -> bool:
        return math.prod(largest_tensor(program, batch, shapes.max_time)[1]) <= TENSORRT_ELEMENT_LIMIT

    if fits(shapes.max_batch):
        return
    name, shape = largest_tensor(program, shapes.max_batch, shapes.max_time)
    low, high = 0, shapes.max_batch - 1  # tensors grow with the batch: halve the range
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits(middle) else (low, middle - 1)
    advice = (f"the largest batch that fits at {shapes.max_time} frames is {low} (--max {low}x{shapes.max_time})"
              if low else f"not even one clip of {shapes.max_time} frames fits: lower the frames (--max)")
    raise TensorTooLargeError(
        f"{checkpoint}: at {shapes.max_batch}x{shapes.max_time} the served program's tensor {name!r} "
        f"({'x'.join(map(str, shape))}) holds {math.prod(shape):,} elements, more than TensorRT holds in one tensor "
        f"({TENSORRT_ELEMENT_LIMIT:,}); {advice}")


def compile_served(checkpoint: str | Path, shapes: ShapeRange, height: int, width: int, fp16: bool = True
                   ) -> CompiledProgram:
    """The served model of ``checkpoint`` compiled by torch-tensorrt for the profile ``shapes`` (refused first,
    where TensorRT would be needed for nothing, when a tensor would be too large for it)."""
    check_program_size(checkpoint, shapes, height, width)
    try:
        import torch_tensorrt
    except ImportError as exc:
        raise TensorRTUnavailableError(f"torch-tensorrt is not installed ({exc}); it needs an NVIDIA GPU machine: "
                                       f"pip install -e '.[tensorrt]'") from None
    if not torch.cuda.is_available():
        raise TensorRTUnavailableError("torch-tensorrt needs a CUDA GPU, and none is available here")
    served, _ = served_from_checkpoint(checkpoint, frame_size=(height, width), precision="fp16" if fp16 else "fp32")
    served = served.cuda().eval()
    program = export_program(served, shapes)
    profile = profile_shapes(shapes, height, width)
    inputs = [torch_tensorrt.Input(min_shape=low, opt_shape=mid, max_shape=high, dtype=dtype)
              for (low, mid, high), dtype in ((profile[names.FRAMES], torch.uint8),
                                                 (profile[names.LENGTHS], torch.int64))]
    # torch-tensorrt 2.10 to 2.14 (TensorRT 10.12 and 11): networks are strongly typed, so each layer runs in the
    # type the program gives it. The program states its precision (ServedModel): no autocast pass is asked for.
    # Its rule-based autocast would cast every node's value, SymInt sizes and integer indices included, and
    # matches excluded operators by name, not by the OpOverload this module would pass.
    return CompiledProgram(torch_tensorrt.dynamo.compile(program, arg_inputs=inputs), served)


def save_compiled(compiled: CompiledProgram, shapes: ShapeRange, out: str | Path) -> Path:
    """Save a compiled program (written whole under a temporary name, then renamed)."""
    import torch_tensorrt

    out = Path(out)
    with atomic_path(out) as tmp:
        torch_tensorrt.save(compiled.module, str(tmp), arg_inputs=list(export_example(compiled.served, shapes)),
                            dynamic_shapes=dynamic_shapes(shapes))
    return out


def compile_torch_trt(checkpoint: str | Path, out: str | Path, shapes: ShapeRange, height: int, width: int,
                      fp16: bool = True) -> Path:
    """`qslr export torch-trt`: compile, then save."""
    return save_compiled(compile_served(checkpoint, shapes, height, width, fp16), shapes, out)
