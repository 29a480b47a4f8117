"""The INT8 graph's layout: where the file on disk puts its QuantizeLinear / DequantizeLinear pairs (TensorRT's
placement), and how every onnxruntime session is given the graph so that onnxruntime's CPU provider runs the
quantised part in INT8 from end to end.

The file is the one TensorRT's explicit quantisation takes: every pair INT8 with a zero point of 0, each activation
quantised after its ReLU (not between a convolution and its ReLU; see `int8_export`), and at a residual addition
only the skip operand quantised: the convolution branch goes into the Add with no pair between them, so that
TensorRT fuses convolution, addition and ReLU into one INT8 kernel (`place_for_tensorrt`; in a downsampling block,
where both operands are convolutions', the branch is the longer path, the 1x1 shortcut is the skip). onnxruntime's
quantiser writes a pair on both operands; the scale it calibrated for the convolution branch is kept in the file's
metadata (`ONNXRUNTIME_SCALES`), not in its graph.

onnxruntime fuses DequantizeLinear -> Conv -> QuantizeLinear into a ``QLinearConv``, an Add between pairs into a
``QLinearAdd``, and pools integers between pairs of one scale. So before onnxruntime sees the graph,
`for_onnxruntime` puts the convolution branch's pair back in memory at its calibrated scale (without it that
convolution and the addition would run in float32). A ReLU in front of a QuantizeLinear it removes only where
that QuantizeLinear's zero point is the smallest value of its type, so that clamping to the type's range is the
ReLU. With signed INT8 and a zero point of 0 it is not: the ReLU stays, and with it the convolution before it runs
in float32 (DequantizeLinear -> Conv -> Relu -> QuantizeLinear is no pattern onnxruntime fuses), as do the residual
additions. So `for_onnxruntime` also stores every tensor that cannot be negative (a ReLU's output, and what
max-pooling, average-pooling or a reshape makes of one) as UINT8 with a zero point of 0 at the same scale: 0..127
in INT8 are 0..127 in UINT8, so each value is what it was. The one difference is above the calibrated range, where
UINT8 saturates at 255 steps instead of 127 (the INT8 graph clips there). The pass runs in memory, in every
onnxruntime session QSLR opens (`onnxruntime_graph`); the graph on disk, and what TensorRT builds from, stays as
TensorRT places it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

# Operators whose output is non-negative when their (first) data input is: pooling and layout changes.
_SIGN_KEEPING = frozenset({"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Unsqueeze", "Squeeze",
                           "Reshape", "Transpose", "Flatten", "Identity"})
# The file's metadata entry (JSON, tensor name -> scale) holding the calibrated scales of the convolution outputs
# the file leaves unquantised where they meet a residual addition.
ONNXRUNTIME_SCALES = "qslr_int8_onnxruntime_scales"


def place_for_tensorrt(model: onnx.ModelProto) -> dict[str, float]:
    """Rewrite ``model`` (as onnxruntime's quantiser writes it) in place for TensorRT: each residual addition whose
    operands are both dequantised reads its convolution branch straight from the convolution, and the pair taken
    off is recorded in the metadata by its scale. Returns the scales, by tensor."""
    graph = model.graph
    made_by = {output: node for node in graph.node for output in node.output}
    readers = _readers(graph)
    constants = {t.name: t for t in graph.initializer}
    depth = _depths(graph)
    scales: dict[str, float] = {}
    dropped: set[str] = set()  # output names of the pairs taken off
    for add in graph.node:
        pairs = [_pair_before(made_by, name) for name in add.input] if add.op_type == "Add" else [None]
        if len(pairs) != 2 or None in pairs:
            continue
        convolutions = [k for k, (_, _, source) in enumerate(pairs) if source in made_by
                        and made_by[source].op_type == "Conv"]
        if not convolutions:
            continue
        # The convolution branch is the longer path from where the two meet; the first operand on a tie.
        branch = max(convolutions, key=lambda k: depth[pairs[k][2]])
        quantise, dequantise, source = pairs[branch]
        if len(readers[quantise.output[0]]) > 1 or len(readers[dequantise.output[0]]) > 1:
            continue  # the pair is read elsewhere too, so it stays
        add.input[branch] = source
        dropped.update((quantise.output[0], dequantise.output[0]))
        scales[source] = float(numpy_helper.to_array(constants[quantise.input[1]]))
    kept = [node for node in graph.node if node.output[0] not in dropped]
    released = {name for node in graph.node if node.output[0] in dropped for name in node.input[1:]}
    del graph.node[:]
    graph.node.extend(kept)
    _drop_unread(graph, released)
    _set_metadata(model, ONNXRUNTIME_SCALES, json.dumps(scales) if scales else None)
    return scales


def _pair_before(made_by: dict[str, onnx.NodeProto], name: str
                 ) -> tuple[onnx.NodeProto, onnx.NodeProto, str] | None:
    """(QuantizeLinear, DequantizeLinear, the tensor quantised) where ``name`` is a pair's dequantised output."""
    dequantise = made_by.get(name)
    if dequantise is None or dequantise.op_type != "DequantizeLinear":
        return None
    quantise = made_by.get(dequantise.input[0])
    if quantise is None or quantise.op_type != "QuantizeLinear":
        return None
    return quantise, dequantise, quantise.input[0]


def _depths(graph: onnx.GraphProto) -> dict[str, int]:
    """Each tensor's longest path (in nodes) from the graph's inputs; ONNX keeps nodes in topological order."""
    depth: dict[str, int] = {}
    for node in graph.node:
        level = 1 + max((depth.get(name, 0) for name in node.input if name), default=0)
        depth.update((output, level) for output in node.output)
    return depth


@dataclass(frozen=True)
class Lowering:
    restored: int  # pairs put back between a convolution and its residual addition (`ONNXRUNTIME_SCALES`)
    unsigned: int  # QuantizeLinear nodes (with their DequantizeLinear readers) moved from INT8 to UINT8
    signed: int  # activation QuantizeLinear nodes left INT8 (their tensor may be negative)


def for_onnxruntime(model: onnx.ModelProto) -> Lowering:
    """Rewrite ``model`` in place as the module's docstring says."""
    restored = _restore_branch_pairs(model)
    graph = model.graph
    constants = {t.name: t for t in graph.initializer}
    readers = _readers(graph)
    graph_outputs = {output.name for output in graph.output}
    non_negative: set[str] = set()
    unsigned: set[str] = set()  # QuantizeLinear outputs stored as UINT8, moved here or already so
    replaced: set[str] = set()
    moved = signed = 0
    for node in graph.node:  # ONNX keeps nodes in topological order, so each input is classified before use
        if node.op_type == "Relu" or (node.op_type in _SIGN_KEEPING and node.input[0] in non_negative) or (
                node.op_type == "DequantizeLinear" and node.input[0] in unsigned):
            non_negative.add(node.output[0])
        if node.op_type != "QuantizeLinear":
            continue
        if len(node.input) < 3 or not node.input[2]:  # no zero point: UINT8 already, by ONNX's default
            unsigned.add(node.output[0])
            continue
        # A quantised graph output keeps the type the graph declares for it.
        if node.input[0] not in non_negative or not _signed_zero(constants, node) or node.output[0] in graph_outputs:
            signed += 1
            continue
        zero = f"{node.output[0]}_uint8_zero_point"
        shape = numpy_helper.to_array(constants[node.input[2]]).shape
        graph.initializer.append(numpy_helper.from_array(np.zeros(shape, np.uint8), zero))
        for user in (node, *readers.get(node.output[0], [])):
            if user is not node and user.op_type != "DequantizeLinear":
                raise ValueError(f"{user.name}: reads the quantised tensor {node.output[0]} directly; a QDQ graph "
                                 "reads one only through DequantizeLinear")
            if len(user.input) > 2 and user.input[2]:
                replaced.add(user.input[2])
                user.input[2] = zero
            else:  # a DequantizeLinear without its zero point would read the UINT8 tensor as it is: it gets one
                user.input.extend([""] * (2 - len(user.input)) + [zero])
        unsigned.add(node.output[0])
        moved += 1
    _drop_unread(graph, replaced)
    return Lowering(restored, moved, signed)


def _restore_branch_pairs(model: onnx.ModelProto) -> int:
    """A pair (INT8, zero point 0) at the recorded scale after each convolution `place_for_tensorrt` took one off,
    read by what read the convolution's output."""
    recorded = next((p.value for p in model.metadata_props if p.key == ONNXRUNTIME_SCALES), None)
    scales: dict[str, float] = json.loads(recorded) if recorded else {}
    graph = model.graph
    nodes: list[onnx.NodeProto] = []
    restored: dict[str, str] = {}  # tensor -> its dequantised copy
    quantisers: set[str] = set()
    for node in graph.node:
        nodes.append(node)
        for tensor in (output for output in node.output if output in scales):
            scale, zero = f"{tensor}_onnxruntime_scale", f"{tensor}_onnxruntime_zero_point"
            graph.initializer.extend([numpy_helper.from_array(np.float32(scales[tensor]), scale),
                                      numpy_helper.from_array(np.int8(0), zero)])
            quantised, restored[tensor] = f"{tensor}_onnxruntime_quantised", f"{tensor}_onnxruntime_dequantised"
            quantisers.add(quantised)
            nodes += [onnx.helper.make_node("QuantizeLinear", [tensor, scale, zero], [quantised],
                                            name=f"{tensor}_onnxruntime_QuantizeLinear"),
                      onnx.helper.make_node("DequantizeLinear", [quantised, scale, zero], [restored[tensor]],
                                            name=f"{tensor}_onnxruntime_DequantizeLinear")]
    missing = scales.keys() - restored.keys()
    if missing:
        raise ValueError(f"the graph's {ONNXRUNTIME_SCALES} name tensors no node makes: {', '.join(sorted(missing))}")
    for node in nodes:
        if node.output[0] not in quantisers:
            node.input[:] = [restored.get(name, name) for name in node.input]
    del graph.node[:]
    graph.node.extend(nodes)
    return len(restored)


def _readers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return readers


def _set_metadata(model: onnx.ModelProto, key: str, value: str | None) -> None:
    """``key`` set to ``value`` (removed for None) in the model's metadata."""
    kept = [p for p in model.metadata_props if p.key != key]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    if value is not None:
        model.metadata_props.add(key=key, value=value)


def _signed_zero(constants: dict[str, TensorProto], node: onnx.NodeProto) -> bool:
    zero = constants.get(node.input[2]) if len(node.input) > 2 else None
    return zero is not None and zero.data_type == TensorProto.INT8 and not numpy_helper.to_array(zero).any()


def _drop_unread(graph: onnx.GraphProto, replaced: set[str]) -> None:
    # onnxruntime warns once per unread initializer at every session start: the replaced zero points that nothing
    # reads any more go (only they: another unread initializer may be a subgraph's).
    read = {name for node in graph.node for name in node.input}
    kept = [t for t in graph.initializer if t.name not in replaced or t.name in read]
    del graph.initializer[:]
    graph.initializer.extend(kept)
