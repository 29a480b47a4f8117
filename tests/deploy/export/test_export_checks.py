"""Judging an export: the measurements come back with their report, and a failed one raises naming the graph."""

from __future__ import annotations

from pathlib import Path

import pytest

from qslr.deploy.export.export_checks import (
    INT8_AGREEMENT,
    PARITY_TOLERANCE,
    ExportCheckError,
    Fusion,
    Int8Agreement,
    Parity,
)
from qslr.deploy.export.int8_export import FloatComparison

GRAPH = Path("model.onnx")


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_parity_within_its_precisions_tolerance_passes_and_beyond_it_fails(precision):
    rounding = None if precision == "fp32" else 1e-4
    Parity(GRAPH, precision, PARITY_TOLERANCE[precision], rounding).check()
    with pytest.raises(ExportCheckError, match=f"model.onnx: onnxruntime \\({precision}\\) differs from PyTorch"):
        Parity(GRAPH, precision, 2 * PARITY_TOLERANCE[precision], rounding).check()
    assert len(Parity(GRAPH, precision, 0.0, rounding).lines()) == (1 if precision == "fp32" else 2)


def test_an_int8_graph_keeping_too_few_greedy_labels_fails():
    Int8Agreement(GRAPH, 4, FloatComparison(100, INT8_AGREEMENT, 0.01)).check()
    with pytest.raises(ExportCheckError, match="model.onnx: the INT8 graph keeps the greedy label of only 90.00%"):
        Int8Agreement(GRAPH, 4, FloatComparison(100, 0.9, 0.01)).check()


def test_convolutions_left_in_float32_are_a_warning():
    assert Fusion(GRAPH, 5, 5, 0).warnings() == []
    (warning,) = Fusion(GRAPH, 3, 5, 1).warnings()
    assert warning.startswith("model.onnx: onnxruntime runs 2 convolutions in float32")
