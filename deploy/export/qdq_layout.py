"""The layout of a QDQ graph's activation quantisation, arranged so that onnxruntime runs every quantised
convolution in INT8 (as ``QLinearConv``) instead of in float32 between a DequantizeLinear and a QuantizeLinear.

onnxruntime's CPU provider fuses DequantizeLinear -> Conv -> QuantizeLinear into ``QLinearConv`` only where the
convolution's input and output are quantised to the same type. Its x86 kernels want unsigned activations, so an
optimiser pass turns each signed Q -> DQ pair into an unsigned one, but only where the QuantizeLinear has exactly one
consumer. onnxruntime's quantiser leaves one QuantizeLinear per tensor, shared by every reader: a residual block's
input feeds the block's first convolution, the downsampling convolution and the skip connection's Add. Such a tensor
stays signed, the convolution's output becomes unsigned, the types differ, and the convolution runs in float32 (in
ResNet-18, 11 of its 20 convolutions). Duplicating the pair by hand does not help by itself: the optimiser's
common-subexpression pass merges identical QuantizeLinear nodes back into one.

So, for each QuantizeLinear made for a tensor that a quantised operator reads (not for a quantised operator's
output, whose single QuantizeLinear is part of that operator's fusion):
- a reader outside the quantised operators (the skip connection's Add) reads the float tensor itself, which is
  also the more exact residual;
- every other reader gets a Q -> DQ pair of its own, with scale and zero-point constants of its own (equal
  values, different names), so that no pass merges them.
The arithmetic is unchanged: each quantised reader sees the same scale and zero point as before.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import onnx

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Arrangement:
    float_readers: int  # readers moved from a DequantizeLinear to the float tensor
    own_pairs: int  # Q -> DQ pairs added so that each quantised reader has its own


def arrange_for_onnxruntime(model: onnx.ModelProto, quantised_ops: Iterable[str]) -> Arrangement:
    """Rewrite ``model``'s graph in place as the module's docstring says."""
    graph = model.graph
    quantised = set(quantised_ops)
    constants = {t.name: t for t in graph.initializer}
    made_by = {output: node for node in graph.node for output in node.output}

    def input_quantiser(dq: onnx.NodeProto | None) -> onnx.NodeProto | None:
        """The QuantizeLinear behind an activation DequantizeLinear, if it quantises a quantised op's input."""
        if dq is None or dq.op_type != "DequantizeLinear":
            return None
        q = made_by.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear":
            return None
        source = made_by.get(q.input[0])
        return None if source is not None and source.op_type in quantised else q

    float_readers = 0
    for node in graph.node:
        if node.op_type in quantised or node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for index, name in enumerate(node.input):
            q = input_quantiser(made_by.get(name))
            if q is not None:
                node.input[index] = q.input[0]
                float_readers += 1

    readers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            readers[name].append(node)
    graph_outputs = {o.name for o in graph.output}
    nodes: list[onnx.NodeProto] = []
    own_pairs = 0
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and not readers[node.output[0]] and node.output[0] not in graph_outputs:
            continue  # every reader now reads the float tensor
        nodes.append(node)
        q = input_quantiser(node)
        if q is None:
            continue
        for copy, reader in enumerate(readers[node.output[0]][1:], start=1):
            parameters = [_constant_copy(graph, constants[name], f"{name}_reader{copy}") for name in q.input[1:]]
            quantised_name, dequantised_name = f"{q.output[0]}_reader{copy}", f"{node.output[0]}_reader{copy}"
            nodes.append(onnx.helper.make_node("QuantizeLinear", [q.input[0], *parameters], [quantised_name],
                                               name=f"{q.name}_reader{copy}"))
            nodes.append(onnx.helper.make_node("DequantizeLinear", [quantised_name, *parameters], [dequantised_name],
                                               name=f"{node.name}_reader{copy}"))
            reader.input[list(reader.input).index(node.output[0])] = dequantised_name
            own_pairs += 1
    del graph.node[:]
    graph.node.extend(nodes)
    _drop_unread_quantisers(graph)
    return Arrangement(float_readers, own_pairs)


def _constant_copy(graph: onnx.GraphProto, tensor: onnx.TensorProto, name: str) -> str:
    copy = onnx.TensorProto()
    copy.CopyFrom(tensor)
    copy.name = name
    graph.initializer.append(copy)
    return name


def _drop_unread_quantisers(graph: onnx.GraphProto) -> None:
    """A QuantizeLinear whose every DequantizeLinear went (all its readers now read float) goes too."""
    read = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    kept = [n for n in graph.node if n.op_type != "QuantizeLinear" or n.output[0] in read]
    del graph.node[:]
    graph.node.extend(kept)


@dataclass(frozen=True)
class Fusion:
    int8: int  # convolutions onnxruntime runs as QLinearConv
    total: int  # all convolutions after its optimisation


def onnxruntime_fusion(path: str | Path, work: str | Path) -> Fusion:
    """How many of the graph's convolutions onnxruntime's CPU provider runs in INT8, read from the graph it
    optimises at session start (written to ``work``)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(Path(work) / f"{Path(path).stem}.optimised.onnx")
    # Extended, not all: the layout-specific level rewrites convolutions for this CPU, and only fusion is counted.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    kinds = [n.op_type for n in onnx.load(options.optimized_model_filepath, load_external_data=False).graph.node]
    fused = kinds.count("QLinearConv")
    return Fusion(fused, fused + kinds.count("Conv") + kinds.count("FusedConv"))
