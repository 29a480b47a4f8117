"""Static checks of an exported graph that need no TensorRT: operators, opset and input ranks."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import onnx

# Operators that TensorRT's ONNX parser imports (onnx-tensorrt's support matrix, TensorRT 8.4 and later;
# the graphs QSLR exports use a small subset of them). Anything else fails the engine build.
TENSORRT_ONNX_OPS = frozenset({
    "Abs", "Acos", "Acosh", "Add", "And", "ArgMax", "ArgMin", "Asin", "Asinh", "Atan", "Atanh", "AveragePool",
    "BatchNormalization", "Cast", "Ceil", "Celu", "Clip", "Concat", "Constant", "ConstantOfShape", "Conv",
    "ConvTranspose", "Cos", "Cosh", "CumSum", "DepthToSpace", "DequantizeLinear", "Div", "Dropout", "Einsum",
    "Elu", "Equal", "Erf", "Exp", "Expand", "EyeLike", "Flatten", "Floor", "Gather", "GatherElements", "GatherND",
    "Gemm", "GlobalAveragePool", "GlobalLpPool", "GlobalMaxPool", "Greater", "GreaterOrEqual", "GRU",
    "HardSigmoid", "Identity", "If", "ImageScaler", "InstanceNormalization", "IsNaN", "LeakyRelu", "Less",
    "LessOrEqual", "Log", "LogSoftmax", "Loop", "LRN", "LSTM", "LpNormalization", "LpPool", "MatMul", "Max",
    "MaxPool", "Mean", "Min", "Mul", "Neg", "Not", "Or", "Pad", "ParametricSoftplus", "Pow", "PRelu",
    "QuantizeLinear", "Range", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax",
    "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare", "Relu", "Reshape", "Resize",
    "ReverseSequence", "RNN", "Round", "ScaledTanh", "Scan", "Scatter", "ScatterElements", "ScatterND", "Selu",
    "Shape", "Sigmoid", "Sign", "Sin", "Sinh", "Size", "Slice", "Softmax", "Softplus", "Softsign", "SpaceToDepth",
    "Split", "Sqrt", "Squeeze", "Sub", "Sum", "Tan", "Tanh", "ThresholdedRelu", "Tile", "TopK", "Transpose",
    "Unsqueeze", "Upsample", "Where", "Xor",
})
MAX_TENSORRT_OPSET = 20  # TensorRT 10 imports opsets 9 to 20


def operator_counts(path: str | Path) -> Counter:
    graph = onnx.load(str(path), load_external_data=False).graph
    counts: Counter = Counter()
    pending = [graph]
    while pending:  # subgraphs of If/Loop/Scan count too
        current = pending.pop()
        for node in current.node:
            counts[node.op_type] += 1
            pending += [a.g for a in node.attribute if a.type == onnx.AttributeProto.GRAPH]
    return counts


def tensorrt_problems(path: str | Path) -> list[str]:
    """What would stop TensorRT's ONNX parser: unsupported operators, a too-new opset, unknown input ranks."""
    model = onnx.load(str(path), load_external_data=False)
    problems = [f"operator {op} ({n}x) is not supported by TensorRT's ONNX parser"
                for op, n in sorted(operator_counts(path).items()) if op not in TENSORRT_ONNX_OPS]
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or opset > MAX_TENSORRT_OPSET:
        problems.append(f"opset {opset} is outside TensorRT's 9..{MAX_TENSORRT_OPSET}")
    for tensor in list(model.graph.input) + list(model.graph.output):
        if not tensor.type.tensor_type.HasField("shape"):
            problems.append(f"{tensor.name} has no static rank")
    return problems
