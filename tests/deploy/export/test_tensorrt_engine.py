"""How an engine is built and recorded, checked without TensorRT: the network typing chosen from the names TensorRT's
Python API has (as its releases list them in python/src/infer/pyCore.cpp), and the engine record's new fields."""

from __future__ import annotations

import json

import pytest

from qslr.deploy.export.nvidia_stack import TENSORRT_VERSION
from qslr.deploy.export.tensorrt_engine import (
    EngineRecord,
    ShapeRange,
    engine_record_path,
    read_engine_record,
    strongly_typed_creation,
    write_engine_record,
)

# NetworkDefinitionCreationFlag's members in the Python API of three releases.
TENSORRT_11_FLAGS = ("STRONGLY_TYPED", "PREFER_AOT_PYTHON_PLUGINS", "PREFER_JIT_PYTHON_PLUGINS")  # kept, ignored
TENSORRT_10_FLAGS = ("EXPLICIT_BATCH", "STRONGLY_TYPED")  # 10.0: opt-in, and the FP16/INT8 builder flags refused
TENSORRT_8_FLAGS = ("EXPLICIT_BATCH", "EXPLICIT_PRECISION")  # 8.6: weakly typed only


@pytest.mark.parametrize("flags", [TENSORRT_11_FLAGS, TENSORRT_10_FLAGS])
def test_a_network_is_strongly_typed_wherever_the_api_has_it(flags):
    assert strongly_typed_creation(flags, "10.0.1") == "STRONGLY_TYPED"


def test_a_tensorrt_without_strongly_typed_networks_is_refused_in_one_line():
    """A weakly typed build with the FP16 flag may run the float32 BiLSTM in FP16: never built."""
    with pytest.raises(ValueError) as refused:
        strongly_typed_creation(TENSORRT_8_FLAGS, "8.6.1")
    message = str(refused.value)
    assert "\n" not in message and message.startswith("TensorRT 8.6.1 cannot build strongly typed networks")
    assert f"TensorRT {TENSORRT_VERSION}" in message


def test_the_record_keeps_the_typing_and_flags_and_reads_older_records(tmp_path):
    plan = tmp_path / "model.plan"
    record = EngineRecord(TENSORRT_VERSION, ShapeRange(1, 4, 6, 16, 140, 400), 224, 224, "int8", "model.int8.onnx",
                          3 * 2**30, True, ["TF32"])
    write_engine_record(plan, record)
    assert read_engine_record(plan) == record
    older = json.loads(engine_record_path(plan).read_text())
    del older["strongly_typed"], older["builder_flags"]
    engine_record_path(plan).write_text(json.dumps(older))
    assert (read_engine_record(plan).strongly_typed, read_engine_record(plan).builder_flags) == (None, None)
