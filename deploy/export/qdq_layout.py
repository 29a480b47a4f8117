"""How onnxruntime's CPU provider is given a QDQ graph so that it runs the quantised part in INT8 from end to end.

The saved INT8 graph is the one TensorRT's explicit quantisation takes: every QuantizeLinear / DequantizeLinear
pair is INT8 with a zero point of 0, placed where TensorRT wants it (after each ReLU, not between a convolution
and its ReLU; see `int8_export`). onnxruntime fuses DequantizeLinear -> Conv -> QuantizeLinear into a
``QLinearConv``, an Add between pairs into a ``QLinearAdd``, and pools integers between pairs of one scale; a ReLU
in front of a QuantizeLinear it removes only where that QuantizeLinear's zero point is the smallest value of its
type, so that clamping to the type's range is the ReLU. With signed INT8 and a zero point of 0 it is not: the
ReLU stays, and with it the convolution before it runs in float32 (DequantizeLinear -> Conv -> Relu ->
QuantizeLinear is no pattern onnxruntime fuses), as do the residual additions.

So before onnxruntime sees the graph, `for_onnxruntime` stores every tensor that cannot be negative (a ReLU's
output, and what max-pooling, average-pooling or a reshape makes of one) as UINT8 with a zero point of 0 at the
same scale: 0..127 in INT8 are 0..127 in UINT8, so each value is what it was. The one difference is above the
calibrated range, where UINT8 saturates at 255 steps instead of 127 (the INT8 graph clips there). The pass runs
in memory, in every onnxruntime session QSLR opens (`onnxruntime_graph`); the graph on disk, and what TensorRT
builds from, stays INT8.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

# Operators whose output is non-negative when their (first) data input is: pooling and layout changes.
_SIGN_KEEPING = frozenset({"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Unsqueeze", "Squeeze",
                           "Reshape", "Transpose", "Flatten", "Identity"})


@dataclass(frozen=True)
class Lowering:
    unsigned: int  # QuantizeLinear nodes (with their DequantizeLinear readers) moved from INT8 to UINT8
    signed: int  # activation QuantizeLinear nodes left INT8 (their tensor may be negative)


def for_onnxruntime(model: onnx.ModelProto) -> Lowering:
    """Rewrite ``model`` in place as the module's docstring says."""
    graph = model.graph
    constants = {t.name: t for t in graph.initializer}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
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
    return Lowering(moved, signed)


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
