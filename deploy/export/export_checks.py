"""Whether an exported graph does what its model does: onnxruntime against PyTorch on batches of mixed lengths, an
INT8 graph's greedy labels against the float32 model's on its calibration clips, and how much of an INT8 graph
onnxruntime really runs in INT8 (lowered by `qdq_layout`, as every session lowers it).

Each check measures and returns what it measured, with the lines that report it; ``check()`` then judges, raising
ExportCheckError naming the graph where it fails.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from qslr.deploy.export.int8_export import CalibrationClip, FloatComparison, compare_with_float
from qslr.deploy.export.onnx_export import max_difference
from qslr.deploy.export.onnxruntime_session import onnx_session, onnxruntime_graph
from qslr.deploy.served import Checkpoint, example_inputs, served_from_checkpoint


class ExportCheckError(ValueError):
    """An exported graph that does not do what its model does; the message names it."""


# Largest |onnxruntime - PyTorch float32| of a log-probability accepted after an export. The float32 graph agrees
# with PyTorch to ~1e-5. The fp16 graph is held to the float32 model it serves: its frame encoder, temporal CNN
# and classifier round to fp16's 11-bit significand; the demo's model drifts 7.7e-3 (test WER unchanged), and a
# padding leak or a wrong cast is of order 1. Against PyTorch's own fp16 kernels, which round in another order,
# the difference is reported but not judged.
PARITY_TOLERANCE = {"fp32": 1e-3, "fp16": 5e-2}
# (batch, frames) of the mixed-length batches compared: one short clip, an odd length, the longest clips at once.
PARITY_BATCHES = ((1, 8), (3, 57), (4, 300))


@dataclass(frozen=True)
class Parity:
    graph: Path
    precision: str
    worst: float  # largest |onnxruntime - PyTorch float32| over the valid steps
    rounding: float | None  # the same against PyTorch in the graph's own precision (None at fp32)

    def lines(self) -> list[str]:
        lines = [f"onnxruntime ({self.precision}) vs PyTorch (fp32): max |difference| {self.worst:.2e} over batches "
                 f"of mixed lengths"]
        if self.rounding is not None:
            lines.append(f"onnxruntime ({self.precision}) vs PyTorch ({self.precision}): max |difference| "
                         f"{self.rounding:.2e}")
        return lines

    def check(self) -> None:
        if self.worst > PARITY_TOLERANCE[self.precision]:
            raise ExportCheckError(f"{self.graph}: onnxruntime ({self.precision}) differs from PyTorch by "
                                   f"{self.worst:.2e}")


def parity(checkpoint: Checkpoint, graph: Path, top_k: int | None, height: int, width: int,
           precision: str) -> Parity:
    """The exported ``graph`` in onnxruntime against ``checkpoint``'s served model in PyTorch."""
    session = onnx_session(graph)
    inputs = [example_inputs(batch, time, height, width, seed=time) for batch, time in PARITY_BATCHES]

    def worst_against(model_precision: str) -> float:
        reference, _ = served_from_checkpoint(checkpoint, top_k, precision=model_precision)
        return max(max_difference(reference, session, *pair) for pair in inputs)

    return Parity(graph, precision, worst_against("fp32"), None if precision == "fp32" else worst_against(precision))


# --int8: the least share of output steps whose greedy label the INT8 graph must keep, on the calibration clips.
# The demo model keeps 99.9 % (0.45 % test WER either way); a misplaced scale or a padding leak keeps far fewer.
INT8_AGREEMENT = 0.98


@dataclass(frozen=True)
class Int8Agreement:
    graph: Path
    clips: int
    comparison: FloatComparison

    def lines(self) -> list[str]:
        comparison = self.comparison
        return [f"onnxruntime (int8) vs PyTorch (fp32) on {self.clips} calibration clips: greedy labels agree on "
                f"{comparison.agreement:.2%} of {comparison.steps} steps, max |probability difference| "
                f"{comparison.max_probability_difference:.2e}"]

    def check(self) -> None:
        if self.comparison.agreement < INT8_AGREEMENT:
            raise ExportCheckError(f"{self.graph}: the INT8 graph keeps the greedy label of only "
                                   f"{self.comparison.agreement:.2%} of the steps (at least {INT8_AGREEMENT:.0%} "
                                   f"expected)")


def int8_agreement(checkpoint: Checkpoint, graph: Path, clips: Sequence[CalibrationClip]) -> Int8Agreement:
    return Int8Agreement(graph, len(clips), compare_with_float(checkpoint, graph, clips))


@dataclass(frozen=True)
class Fusion:
    graph: Path
    int8: int  # convolutions onnxruntime runs as QLinearConv
    total: int  # all convolutions after its optimisation
    float_relus: int  # ReLUs it still runs in float32

    def lines(self) -> list[str]:
        return [f"onnxruntime runs {self.int8} of {self.total} convolutions in INT8 (QLinearConv); "
                f"{self.float_relus} ReLUs stay float32"]

    def warnings(self) -> list[str]:
        """Not an error: the graph computes what it should, only slower than it could."""
        if self.int8 < self.total:
            return [f"{self.graph}: onnxruntime runs {self.total - self.int8} convolutions in float32 between their "
                    f"DequantizeLinear and QuantizeLinear"]
        return []


def onnxruntime_fusion(path: str | Path, work: str | Path) -> Fusion:
    """How much of the graph onnxruntime's CPU provider runs in INT8 (lowered as every QSLR session lowers it),
    read from the graph it optimises at session start (written to ``work``)."""
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(Path(work) / f"{Path(path).stem}.optimised.onnx")
    # Extended, not all: the layout-specific level rewrites convolutions for this CPU, and only fusion is counted.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    ort.InferenceSession(onnxruntime_graph(path), options, providers=["CPUExecutionProvider"])
    kinds = [n.op_type for n in onnx.load(options.optimized_model_filepath, load_external_data=False).graph.node]
    fused = kinds.count("QLinearConv")
    return Fusion(Path(path), fused, fused + kinds.count("Conv") + kinds.count("FusedConv"), kinds.count("Relu"))


def int8_fusion(graph: Path) -> Fusion:
    with tempfile.TemporaryDirectory(prefix="qslr-fusion-") as work:
        return onnxruntime_fusion(graph, work)
