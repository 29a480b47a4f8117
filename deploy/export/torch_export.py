"""torch.export of the served signature with dynamic batch and time: the program torch-tensorrt compiles."""

from __future__ import annotations

import math

import torch
from torch.export import Dim, ExportedProgram

from qslr.deploy import tensor_names as names
from qslr.deploy.export.tensorrt_engine import ShapeRange
from qslr.model.served_model import ServedModel
from qslr.model.temporal_conv import output_lengths
from qslr.pipelines.temporal_padding import padded_length


def dynamic_shapes(shapes: ShapeRange) -> dict[str, dict[int, Dim]]:
    """torch.export's dims for ``frames`` and ``lengths``, over the profile's bounds; one batch dim for both."""
    batch = _dim("batch", shapes.min_batch, shapes.max_batch)
    time = _dim("time", shapes.min_time, shapes.max_time)
    return {names.FRAMES: {0: batch, 1: time}, names.LENGTHS: {0: batch}}


def export_program(served: ServedModel, shapes: ShapeRange) -> ExportedProgram:
    """Trace ``served`` (with its frame size set) for any batch and time within ``shapes``."""
    if served.frame_size is None:
        raise ValueError("the served model needs its frame size for an export: constant crop offsets")
    shortest = shortest_time(served)
    if shapes.min_time < shortest:
        raise ValueError(f"torch.export keeps the time axis dynamic from {shortest} frames up, the profile starts "
                         f"at {shapes.min_time}: shorter clips are padded to the served minimum")
    # Non-strict, as torch-tensorrt traces: Python runs as Python and only tensor operations are recorded.
    return torch.export.export(served.eval(), export_example(served, shapes), dynamic_shapes=dynamic_shapes(shapes),
                               strict=False)


def export_example(served: ServedModel, shapes: ShapeRange) -> tuple[torch.Tensor, torch.Tensor]:
    """(frames, lengths) to trace with, on the model's device, at the profile's optimum where it can be."""
    height, width = served.frame_size
    # A size of 1 in the example would be specialised, so the example avoids it where the range does.
    batch = min(max(2, shapes.opt_batch), shapes.max_batch)
    time = min(max(2, shapes.opt_time), shapes.max_time)
    device = next(served.parameters()).device
    frames = torch.zeros(batch, time, height, width, 3, dtype=torch.uint8, device=device)
    lengths = torch.linspace(time, max(1, time // 2), batch, device=device).round().to(torch.int64)
    return frames, lengths


def shortest_time(served: ServedModel) -> int:
    """Fewest frames whose output has two steps.

    A traced size that may be 1 is specialised, because contiguity depends on it (torch.export's 0/1
    specialisation), and below this count the BiLSTM's time axis is 1.
    """
    kernels = served.model.temporal.kernels
    frames = 1
    while output_lengths(torch.tensor([padded_length(frames, kernels)]), kernels) < 2:
        frames += 1
    return frames


def largest_tensor(program: ExportedProgram, batch: int, frames: int) -> tuple[str, tuple[int, ...]]:
    """(node, shape) of the largest tensor ``program`` computes for ``batch`` clips of ``frames`` frames: its
    operators run on fake tensors, which carry shapes and no values (no memory, well under a second)."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.passes.fake_tensor_prop import FakeTensorProp

    module = program.module()
    height, width = program.example_inputs[0][0].shape[2:4]
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    with mode:
        inputs = (torch.empty(batch, frames, height, width, 3, dtype=torch.uint8),
                  torch.full((batch,), frames, dtype=torch.int64))
    FakeTensorProp(module, mode).propagate(*inputs)
    sized = [(node.name, tuple(node.meta["val"].shape)) for node in module.graph.nodes
             if isinstance(node.meta.get("val"), torch.Tensor)]
    return max(sized, key=lambda item: math.prod(item[1]))


def _dim(name: str, low: int, high: int) -> Dim | None:
    return Dim(name, min=low, max=high) if low < high else None
