"""The largest tensor of an exported graph at an engine profile's largest shapes, against what TensorRT can hold.

TensorRT's support for tensors of 2^31 elements or more is incomplete (the ONNX parser and many kernels index them
with 32-bit integers; NVIDIA/TensorRT#3815 was fixed only in part by 10.0.1), and the served graph's tensors grow
with the batch and the frames: at 16 clips of 400 frames at 224x224, ResNet-18's stem writes 6,592 x 64 x 112 x 112
values (5.3e9) and CorrNet's affinities 6,592 x 784 x 784 (4.1e9). So `qslr export tensorrt` sizes every tensor
before it builds, and refuses a profile that has one over the limit, naming it and the largest batch that fits.

The sizes come from ONNX's own shape inference, node by node, with the profile's shapes given to the graph's
inputs. ONNX's whole-graph inference leaves the frame count unknown from the first Range on (the served graph pads
each clip to a length computed from the input's shape), so the small integer tensors that shapes are computed from
are evaluated as the graph goes (ONNX's reference evaluator) and handed to each node's inference as known values.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from qslr.deploy import tensor_names as names

log = logging.getLogger(__name__)

# The most elements one TensorRT tensor is held to here: the largest volume a signed 32-bit index reaches.
TENSORRT_ELEMENT_LIMIT = 2**31 - 1
# Tensors of at most this many elements are evaluated when their inputs are known: shapes, sizes and indices.
_EVALUATED = 4096


class TensorTooLargeError(ValueError):
    """A profile under which the graph holds a tensor TensorRT cannot; the message names it and what fits."""


@dataclass(frozen=True)
class Tensor:
    name: str
    shape: tuple[int, ...]

    @property
    def elements(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Sizes:
    largest: Tensor
    unsized: tuple[str, ...]  # tensors whose shape could not be worked out


def tensor_sizes(graph: onnx.ModelProto, batch: int, frames: int, height: int, width: int) -> Sizes:
    """The largest tensor of the served ``graph`` (weights aside) for ``batch`` clips of ``frames`` frames."""
    given = {names.FRAMES: (batch, frames, height, width, 3), names.LENGTHS: (batch,)}
    main = graph.graph
    opsets = {o.domain or "": o.version for o in graph.opset_import}
    weights = {t.name for t in main.initializer}
    types: dict[str, onnx.TypeProto] = {}
    values: dict[str, np.ndarray] = {}
    for tensor in main.initializer:
        types[tensor.name] = helper.make_tensor_type_proto(tensor.data_type, list(tensor.dims))
        if math.prod(tensor.dims) <= _EVALUATED:
            values[tensor.name] = numpy_helper.to_array(tensor)
    for value in main.input:
        if value.name not in weights:
            if value.name not in given:
                raise ValueError(f"graph input {value.name!r} is not one of the served inputs {', '.join(given)}")
            types[value.name] = helper.make_tensor_type_proto(value.type.tensor_type.elem_type,
                                                              list(given[value.name]))
    for node in main.node:
        known = {name: numpy_helper.from_array(values[name], name) for name in node.input if name in values}
        try:
            schema = onnx.defs.get_schema(node.op_type, opsets.get(node.domain or "", 1), node.domain)
            types.update(onnx.shape_inference.infer_node_outputs(
                schema, node, {name: types[name] for name in node.input if name in types}, known))
        except (onnx.defs.SchemaError, onnx.shape_inference.InferenceError) as exc:
            log.debug("%s (%s): no shape inferred (%s)", node.name, node.op_type, exc)
            continue  # its outputs stay unsized
        values.update(_evaluated(node, values, types))
    sized = [Tensor(name, shape) for name, kind in types.items()
             if name not in weights and (shape := _shape(kind)) is not None]
    outputs = [output for node in main.node for output in node.output if output]
    unsized = tuple(name for name in outputs if name not in types or _shape(types[name]) is None)
    return Sizes(max(sized, key=lambda t: t.elements), unsized)


def _evaluated(node: onnx.NodeProto, values: dict[str, np.ndarray], types: dict[str, onnx.TypeProto]
               ) -> dict[str, np.ndarray]:
    """The node's outputs, where they are small and every input is known (a Shape only needs its input's shape)."""
    if node.op_type == "Shape":
        shape = _shape(types.get(node.input[0]))
        if shape is None:
            return {}
        attributes = {a.name: a.i for a in node.attribute}
        return {node.output[0]: np.array(shape[attributes.get("start", 0):attributes.get("end", len(shape))],
                                         np.int64)}
    if node.op_type == "Constant":
        value = next((a.t for a in node.attribute if a.name == "value"), None)
        return {node.output[0]: numpy_helper.to_array(value)} if value is not None else {}
    inputs = [name for name in node.input if name]
    shapes = [_shape(types.get(output)) for output in node.output]
    if not inputs or not all(name in values for name in inputs) or any(
            shape is None or math.prod(shape) > _EVALUATED for shape in shapes):
        return {}
    from onnx.reference import ReferenceEvaluator

    try:
        results = ReferenceEvaluator(node).run(None, {name: values[name] for name in inputs})
    except Exception as exc:  # noqa: BLE001 - any operator the evaluator cannot run leaves its outputs unknown
        log.debug("%s (%s): not evaluated (%s)", node.name, node.op_type, exc)
        return {}
    return {output: np.asarray(result) for output, result in zip(node.output, results, strict=True)}


def _shape(kind: onnx.TypeProto | None) -> tuple[int, ...] | None:
    if kind is None or not kind.tensor_type.HasField("shape"):
        return None
    dims = kind.tensor_type.shape.dim
    return tuple(d.dim_value for d in dims) if all(d.HasField("dim_value") for d in dims) else None


def largest_batch(graph: onnx.ModelProto, frames: int, height: int, width: int, up_to: int,
                  limit: int = TENSORRT_ELEMENT_LIMIT) -> int:
    """The largest batch of at most ``up_to`` clips of ``frames`` frames whose tensors are all within ``limit``
    (0 where not even one clip's are). Tensors grow with the batch, so it is searched by halving."""
    low, high = 0, up_to
    while low < high:
        middle = (low + high + 1) // 2
        if tensor_sizes(graph, middle, frames, height, width).largest.elements <= limit:
            low = middle
        else:
            high = middle - 1
    return low


def check_profile_size(path: str | Path, batch: int, frames: int, height: int, width: int,
                       limit: int = TENSORRT_ELEMENT_LIMIT) -> Sizes:
    """The graph's sizes at its profile's largest shapes, ``batch`` x ``frames``; a TensorTooLargeError (one line)
    where a tensor is over ``limit``."""
    graph = onnx.load(str(path), load_external_data=False)
    sizes = tensor_sizes(graph, batch, frames, height, width)
    if sizes.unsized:
        log.warning("%s: %d tensors could not be sized (the first: %s); the limit of %d elements is checked on the "
                    "others", path, len(sizes.unsized), sizes.unsized[0], limit)
    largest = sizes.largest
    if largest.elements > limit:
        fits = largest_batch(graph, frames, height, width, batch - 1, limit)
        advice = (f"the largest batch that fits at {frames} frames is {fits} (--max {fits}x{frames})" if fits else
                  f"not even one clip of {frames} frames fits: lower the frames (--max)")
        raise TensorTooLargeError(
            f"{path}: at {batch}x{frames} its tensor {largest.name!r} ({'x'.join(map(str, largest.shape))}) holds "
            f"{largest.elements:,} elements, more than TensorRT holds in one tensor ({limit:,}); {advice}")
    return sizes
