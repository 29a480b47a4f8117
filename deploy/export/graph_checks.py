"""Static checks of an exported graph against onnx-tensorrt's published support table, and of a QDQ graph against
TensorRT's quantisation rules and its placement of Q/DQ pairs at residual additions; no TensorRT needed."""

from __future__ import annotations

import json
from collections import Counter
from functools import cache
from pathlib import Path
from typing import NamedTuple

import onnx
from onnx import numpy_helper

from qslr.pipelines.package_data import package_folder

TABLE = package_folder("qslr.deploy.export") / "tensorrt_onnx_operators.json"

_P = onnx.TensorProto
# ONNX element types under the table's names. FP8 is E4M3FN only: the parser has no other 8-bit float.
_TYPE_NAMES = {_P.FLOAT: "FP32", _P.FLOAT16: "FP16", _P.BFLOAT16: "BF16", _P.DOUBLE: "DOUBLE", _P.INT32: "INT32",
               _P.INT64: "INT64", _P.INT8: "INT8", _P.UINT8: "UINT8", _P.BOOL: "BOOL", _P.FLOAT8E4M3FN: "FP8",
               _P.INT4: "INT4", _P.FLOAT4E2M1: "FP4"}
# The header spells the wide float types out; the rows abbreviate them.
_HEADER_NAMES = {"FLOAT32": "FP32", "FLOAT16": "FP16", "BFLOAT16": "BF16"}
_QUANTIZED = frozenset({"INT8", "INT4", "FP8", "FP4"})
# TensorRT converts UINT8 only to and from FP32 and FP16 (tensorrt.DataType.UINT8 in its API reference).
_UINT8_PARTNERS = frozenset({"FP32", "FP16"})


@cache
def tensorrt_table() -> dict:
    """The support table (source, opset range, data types, one row per operator), read once."""
    return json.loads(TABLE.read_text())


def operator_counts(path: str | Path) -> Counter:
    graph = onnx.load(str(path), load_external_data=False).graph
    counts: Counter = Counter()
    pending = [graph]
    while pending:  # subgraphs of If/Loop/Scan count too
        current = pending.pop()
        for node in current.node:
            counts[node.op_type] += 1
            pending += _subgraphs(node)
    return counts


def tensorrt_problems(path: str | Path) -> list[str]:
    """One line per thing TensorRT's ONNX parser would refuse, naming the node and tensor concerned."""
    model = onnx.load(str(path), load_external_data=False)
    table = tensorrt_table()
    version = table["source"]["tensorrt_version"]
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    low, high = table["opset"]["min"], table["opset"]["max"]
    problems = []
    if not low <= opsets.get("ai.onnx", 0) <= high:
        problems.append(f"opset {opsets.get('ai.onnx')} is outside the {low}..{high} TensorRT {version} imports")
    model = onnx.shape_inference.infer_shapes(model)
    graph = model.graph
    weights = {t.name for t in graph.initializer}
    io = _Network(inputs={v.name for v in graph.input} - weights, outputs={v.name for v in graph.output})
    for kind, values in (("input", graph.input), ("output", graph.output)):
        for value in values:
            if value.name not in weights:
                problems += _io_problems(kind, value, table)
    # The parser casts DOUBLE network inputs down to FP32 too; they are reported above as inputs.
    problems += _graph_problems(graph, {}, io.inputs, opsets, io, table)
    if any(node.op_type == "QuantizeLinear" for node in graph.node):
        problems += residual_placement_problems(graph)
    return problems


def residual_placement_problems(graph: onnx.GraphProto) -> list[str]:
    """TensorRT's placement at a residual addition of a QDQ graph (an Add of two activations, one of them a
    convolution's output, straight or through a pair): the convolution branch goes in with no pair between it and
    the Add, the other operand through a DequantizeLinear. Then TensorRT fuses convolution, addition and the ReLU
    after them into one INT8 kernel; a pair on the convolution branch keeps them apart."""
    made_by = {output: node for node in graph.node for output in node.output}
    problems = []
    for node in graph.node:
        if node.op_type != "Add" or len(node.input) != 2 or not all(name in made_by for name in node.input):
            continue
        straight = [made_by[name].op_type == "Conv" for name in node.input]
        through_pair = [_quantised_source(made_by, name) == "Conv" for name in node.input]
        if not any(straight) and not any(through_pair):
            continue
        label = f"node {node.name or node.output[0]!r} (Add)"
        if not any(straight):
            problems.append(f"{label}: both operands are dequantised; TensorRT fuses a residual addition into the "
                            f"convolution of its branch only when no Q/DQ pair lies between them (quantise the skip "
                            f"operand alone)")
        elif all(straight) or made_by[node.input[straight.index(False)]].op_type != "DequantizeLinear":
            problems.append(f"{label}: its skip operand is not dequantised; TensorRT's residual fusion takes the "
                            f"operand beside the convolution branch quantised")
    return problems


def _quantised_source(made_by: dict[str, onnx.NodeProto], name: str) -> str | None:
    """The op type that made the tensor a DequantizeLinear <- QuantizeLinear pair gives ``name`` from."""
    dequantise = made_by[name]
    quantise = made_by.get(dequantise.input[0]) if dequantise.op_type == "DequantizeLinear" else None
    source = made_by.get(quantise.input[0]) if quantise is not None and quantise.op_type == "QuantizeLinear" else None
    return source.op_type if source is not None else None


class _Network(NamedTuple):
    """The top-level graph's own inputs and outputs: the only places TensorRT allows UINT8."""

    inputs: set[str]
    outputs: set[str]


def _io_problems(kind: str, value: onnx.ValueInfoProto, table: dict) -> list[str]:
    problems = []
    tensor = value.type.tensor_type
    if not tensor.HasField("shape"):
        problems.append(f"graph {kind} {value.name!r} has no known rank")
    name = _type_name(tensor.elem_type)
    allowed = {_HEADER_NAMES.get(t, t) for t in table["data_types"]}
    if name not in allowed:
        problems.append(f"graph {kind} {value.name!r} is {name}, not a TensorRT data type")
    elif name == "DOUBLE":
        # The parser makes it an FP32 binding: callers sending float64 would no longer match the engine.
        problems.append(f"graph {kind} {value.name!r} is DOUBLE: TensorRT has no DOUBLE tensors and casts it down "
                        f"to FP32")
    elif name in _QUANTIZED:
        problems.append(f"graph {kind} {value.name!r} is {name}, which TensorRT only has inside a graph, "
                        f"quantized from a wider float type")
    return problems


def _graph_problems(graph: onnx.GraphProto, outer_types: dict[str, int], outer_weights: set[str],
                    opsets: dict[str, int], io: _Network, table: dict) -> list[str]:
    """Every node of the graph and of its subgraphs, which also read the tensors of the graphs around them."""
    types = dict(outer_types)
    types.update({v.name: v.type.tensor_type.elem_type for v in [*graph.input, *graph.value_info, *graph.output]
                  if v.type.tensor_type.elem_type})
    types.update({t.name: t.data_type for t in graph.initializer})
    # Weights are what the parser casts down from DOUBLE to FP32 as it reads them (the header's DOUBLE note).
    weights = outer_weights | {t.name for t in graph.initializer}
    weights.update(name for node in graph.node if node.op_type == "Constant" for name in node.output)
    constants = {t.name: t for t in graph.initializer}
    constants.update({node.output[0]: attribute.t for node in graph.node if node.op_type == "Constant"
                      for attribute in node.attribute if attribute.name == "value"})
    problems = []
    for node in graph.node:
        problems += _node_problems(node, types, weights, opsets, io, table)
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            problems += _quantization_problems(node, constants, weights)
        for subgraph in _subgraphs(node):
            problems += _graph_problems(subgraph, types, weights, opsets, io, table)
    return problems


def _node_problems(node: onnx.NodeProto, types: dict[str, int], weights: set[str], opsets: dict[str, int],
                   io: _Network, table: dict) -> list[str]:
    label = f"node {node.name or ', '.join(node.output)!r} ({node.op_type})"
    version = table["source"]["tensorrt_version"]
    row = table["operators"].get(node.op_type) if node.domain in ("", "ai.onnx") else None
    if row is None:
        return [f"{label}: not in TensorRT {version}'s ONNX operator table"]
    if not row["supported"]:
        return [f"{label}: TensorRT {version}'s ONNX parser does not support it"]
    problems = []
    for name in node.input:
        if name and types.get(name) == _P.UINT8 and not _reads_uint8_input(node, name, io):
            problems.append(f"{label} reads UINT8 tensor {name!r}: TensorRT has UINT8 only for network inputs "
                            f"and outputs, and only a Cast to FP32 or FP16 may read such an input")
    supported = set(row["types"])
    for name in _data_inputs(node, opsets):
        if name not in types:
            continue
        kind = _type_name(types[name])
        if kind == "DOUBLE" and name in weights:
            kind = "FP32"
        if kind not in supported and kind != "UINT8":  # UINT8 has its own rule above
            problems.append(f"{label} input {name!r} is {kind}; TensorRT {version} takes {node.op_type} in "
                            f"{', '.join(row['types'])}")
    if node.op_type == "Cast" and (target := _cast_target(node)) not in supported:
        problems.append(f"{label} casts {node.input[0]!r} to {target}; TensorRT {version} casts to "
                        f"{', '.join(row['types'])}")
    for name in node.output:
        if types.get(name) == _P.UINT8 and name in io.outputs and not (
                node.op_type == "Cast" and _type_name(types.get(node.input[0], 0)) in _UINT8_PARTNERS):
            problems.append(f"{label} writes UINT8 network output {name!r}: TensorRT makes UINT8 only by a Cast "
                            f"from FP32 or FP16")
    return problems


def _quantization_problems(node: onnx.NodeProto, constants: dict[str, onnx.TensorProto], weights: set[str]
                           ) -> list[str]:
    """TensorRT's explicit quantisation: constant positive scales, zero points present, INT8 and all 0 (so the
    quantised type is INT8, not ONNX's default UINT8), one scale per tensor on activations; one scale per channel
    only where a weight is dequantised."""
    label = f"node {node.name or ', '.join(node.output)!r} ({node.op_type})"
    scale_name = node.input[1] if len(node.input) > 1 else ""
    zero_name = node.input[2] if len(node.input) > 2 else ""
    if scale_name not in constants:
        return [f"{label}: its scale {scale_name!r} is not a constant; TensorRT needs constant scales"]
    problems = []
    scale = numpy_helper.to_array(constants[scale_name])
    if not (scale > 0).all():
        problems.append(f"{label}: its scale {scale_name!r} is not positive everywhere")
    if not zero_name:
        problems.append(f"{label}: no zero point, so it quantises to UINT8; TensorRT quantises to INT8 (give an "
                        f"INT8 zero point of 0)")
    elif zero_name not in constants:
        problems.append(f"{label}: its zero point {zero_name!r} is not a constant")
    else:
        zero = constants[zero_name]
        if zero.data_type != onnx.TensorProto.INT8:
            problems.append(f"{label}: its zero point {zero_name!r} is {_type_name(zero.data_type)}; TensorRT "
                            f"quantises to INT8")
        if numpy_helper.to_array(zero).any():
            problems.append(f"{label}: its zero point {zero_name!r} is not 0 (TensorRT's quantisation is symmetric)")
    if scale.size > 1:
        dequantises_weight = node.op_type == "DequantizeLinear" and node.input[0] in weights
        if not dequantises_weight:
            problems.append(f"{label}: {scale.size} scales on activation {node.input[0]!r}; TensorRT takes one scale "
                            f"per tensor on activations (per channel only on weights)")
    return problems


def _reads_uint8_input(node: onnx.NodeProto, name: str, io: _Network) -> bool:
    """A network input read by a Cast to FP32 or FP16: the only way TensorRT takes UINT8 in."""
    return node.op_type == "Cast" and name in io.inputs and _cast_target(node) in _UINT8_PARTNERS


def _cast_target(node: onnx.NodeProto) -> str:
    return _type_name(next(a.i for a in node.attribute if a.name == "to"))


def _data_inputs(node: onnx.NodeProto, opsets: dict[str, int]) -> list[str]:
    """The inputs the table's types are about: those of the operator's data type ("T", else the first input's).

    Index, shape and length inputs (an LSTM's INT32 sequence_lens, a Resize's INT64 sizes) have types fixed
    by ONNX itself and are not what the table lists.
    """
    try:
        schema = onnx.defs.get_schema(node.op_type, opsets.get(node.domain or "ai.onnx", 1), node.domain)
    except onnx.defs.SchemaError:
        return [name for name in node.input[:1] if name]
    formals = list(schema.inputs)
    if not formals:
        return []
    data = "T" if any(f.type_str == "T" for f in formals) else formals[0].type_str
    return [name for index, name in enumerate(node.input)
            if name and formals[min(index, len(formals) - 1)].type_str == data]


def _subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    graphs = []
    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.GRAPH:
            graphs.append(attribute.g)
        elif attribute.type == onnx.AttributeProto.GRAPHS:
            graphs += attribute.graphs
    return graphs


def _type_name(elem_type: int) -> str:
    if elem_type in _TYPE_NAMES:
        return _TYPE_NAMES[elem_type]
    return onnx.TensorProto.DataType.Name(elem_type) if elem_type else "of unknown type"
