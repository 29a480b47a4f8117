"""A Triton model config against the ONNX graph it serves: tensor names, data types and dimensions.

A `tensorrt_plan` model is loaded by Triton's TensorRT backend, which matches the config's tensors to the
engine's by name and refuses a model whose types or shapes differ. No engine can be built on a CPU, but the
engine is built from the exported graph, so checking the config against that graph finds the same mistakes
on every test run. The python `visual` model is checked the same way.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

# Triton's config data types and the ONNX element types they carry.
_ONNX_TYPES = {
    "TYPE_BOOL": onnx.TensorProto.BOOL, "TYPE_UINT8": onnx.TensorProto.UINT8, "TYPE_INT8": onnx.TensorProto.INT8,
    "TYPE_INT32": onnx.TensorProto.INT32, "TYPE_INT64": onnx.TensorProto.INT64,
    "TYPE_FP16": onnx.TensorProto.FLOAT16, "TYPE_BF16": onnx.TensorProto.BFLOAT16,
    "TYPE_FP32": onnx.TensorProto.FLOAT, "TYPE_FP64": onnx.TensorProto.DOUBLE,
}


def read_config(path: str | Path) -> model_config_pb2.ModelConfig:
    try:
        return text_format.Parse(Path(path).read_text(), model_config_pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise ValueError(f"{path}: not a valid Triton model config ({exc})") from None


def _graph_tensors(model: onnx.ModelProto) -> dict[str, tuple[int, list[int | None]]]:
    """name -> (element type, dims with None for a dynamic one) of every graph input and output."""
    tensors = {}
    for value in list(model.graph.input) + list(model.graph.output):
        tensor_type = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
        tensors[value.name] = (tensor_type.elem_type, dims)
    return tensors


def config_problems(config: model_config_pb2.ModelConfig, model: onnx.ModelProto) -> list[str]:
    """Why Triton would not load ``config`` over an engine built from ``model``; empty when it would."""
    graph = _graph_tensors(model)
    # A python model reshapes what it receives itself (lengths arrive as [1] per request); only an engine
    # must match dimension for dimension.
    exact_shapes = config.platform == "tensorrt_plan" or config.backend == "tensorrt"
    problems = []
    declared = {}
    for kind, entries in (("input", config.input), ("output", config.output)):
        for entry in entries:
            declared[entry.name] = kind
            where = f"{config.name} {kind} {entry.name}"
            if entry.name not in graph:
                problems.append(f"{where}: the graph has no such tensor (it has {', '.join(sorted(graph))})")
                continue
            elem_type, graph_dims = graph[entry.name]
            type_name = model_config_pb2.DataType.Name(entry.data_type)
            if _ONNX_TYPES.get(type_name) != elem_type:
                problems.append(f"{where}: {type_name} in the config, "
                                f"{onnx.TensorProto.DataType.Name(elem_type)} in the graph")
            if not exact_shapes:
                continue
            # With batching, Triton adds the batch dimension in front; a reshape gives the engine's own shape.
            dims = list(entry.reshape.shape) if entry.HasField("reshape") else list(entry.dims)
            expected = ([-1] if config.max_batch_size > 0 else []) + dims
            if len(expected) != len(graph_dims):
                problems.append(f"{where}: rank {len(expected)} ({expected}) in the config, {len(graph_dims)} "
                                f"({graph_dims}) in the graph")
                continue
            for axis, (want, have) in enumerate(zip(expected, graph_dims, strict=True)):
                if have is None and want != -1:
                    problems.append(f"{where}: dimension {axis} is fixed to {want} but dynamic in the graph")
                elif have is not None and want not in (-1, have):
                    problems.append(f"{where}: dimension {axis} is {want} in the config, {have} in the graph")
    for name in graph:
        if name not in declared and name in {v.name for v in model.graph.input}:
            problems.append(f"{config.name}: the graph's input {name} is missing from the config")
    return problems

