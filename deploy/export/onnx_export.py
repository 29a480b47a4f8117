"""ONNX export of the served signature, with dynamic batch and time, and its validation."""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from qslr.deploy import tensor_names as names
from qslr.deploy.export.onnxruntime_session import onnx_session  # noqa: F401 - imported from here too
from qslr.deploy.served import Checkpoint, example_inputs, served_from_checkpoint
from qslr.model.served_model import ServedModel, fix_adaptive_pools
from qslr.pipelines.atomic_output import atomic_path

log = logging.getLogger(__name__)
OPSET = 17  # within the opsets TensorRT's ONNX parser imports
TOPK_OUTPUTS = (names.TOPK_LOG_PROBS, names.TOPK_IDS)


@dataclass(frozen=True)
class ExportInfo:
    path: Path
    height: int
    width: int
    crop_size: int
    num_classes: int
    top_k: int | None
    kernels: tuple[str, ...]  # the temporal CNN's, which fix how many frames one output step covers
    precision: str = "fp32"

def export_onnx(checkpoint: Checkpoint, out: str | Path, height: int, width: int, top_k: int | None = None,
                opset: int = OPSET, precision: str = "fp32") -> ExportInfo:
    """The served signature as an ONNX graph; at ``fp16`` the graph's own types say what runs in half
    precision (see ServedModel), so onnxruntime and TensorRT's strongly typed networks run it as written."""
    served, extra = served_from_checkpoint(checkpoint, top_k, (height, width), precision)
    fix_adaptive_pools(served.model, served.crop_size)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    outputs = names.OUTPUTS + (TOPK_OUTPUTS if top_k else ())
    dynamic = {names.FRAMES: {0: "batch", 1: "time"}, names.LENGTHS: {0: "batch"},
               names.LOG_PROBS: {0: "batch", 1: "steps"}, names.OUTPUT_LENGTHS: {0: "batch"}}
    if top_k:
        dynamic.update({name: {0: "batch", 1: "steps"} for name in TOPK_OUTPUTS})
    with atomic_path(out) as tmp:
        # The legacy exporter keeps the time axis dynamic through the BiLSTM's forward-only LSTM layers, which
        # become ONNX LSTMs; the dynamo exporter traces with torch.export, which unrolls an LSTM over the frames.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(served, example_inputs(2, 48, height, width), str(tmp), input_names=list(names.INPUTS),
                              output_names=list(outputs), dynamic_axes=dynamic, opset_version=opset, dynamo=False)
        graph = onnx.load(str(tmp))
        metadata = {"qslr_vocab": json.dumps(extra["vocab"]), "qslr_crop_size": str(served.crop_size),
                    "qslr_height": str(height), "qslr_width": str(width),
                    "qslr_num_classes": str(served.model.num_classes),
                    "qslr_top_k": str(top_k or 0), "qslr_precision": precision,
                    "qslr_config": json.dumps(extra["config"]),
                    "qslr_input": json.dumps(asdict(extra["input"]))}
        for key, value in metadata.items():
            graph.metadata_props.add(key=key, value=value)
        # full_check also infers every node's types: a Cast whose output is labelled with another type than it
        # produces, or an operator given mixed float types, is refused here rather than by a runtime.
        onnx.checker.check_model(graph, full_check=True)
        onnx.save(graph, str(tmp))
    return ExportInfo(out, height, width, served.crop_size, served.model.num_classes, top_k,
                      tuple(served.model.temporal.kernels), precision)


def graph_precision(metadata: dict[str, str]) -> str:
    """What a graph written by `qslr export onnx` runs its frame encoder, temporal CNN and classifier in
    (graphs written before precision was recorded are fp32)."""
    return metadata.get("qslr_precision", "fp32")


def read_metadata(path: str | Path) -> dict[str, str]:
    return graph_metadata(onnx.load(str(path), load_external_data=False))


def graph_metadata(graph: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in graph.metadata_props}


def max_difference(served: ServedModel, session, frames: torch.Tensor, lengths: torch.Tensor) -> float:
    """Largest |PyTorch - onnxruntime| over the valid steps of every sample."""
    with torch.no_grad():
        expected, expected_lengths = served(frames, lengths)[:2]
    feed = {names.FRAMES: frames.numpy(), names.LENGTHS: lengths.numpy()}
    got, got_lengths = session.run(list(names.OUTPUTS), feed)[:2]
    if not np.array_equal(got_lengths, expected_lengths.numpy()):
        raise AssertionError(f"output lengths differ: onnxruntime {got_lengths}, PyTorch {expected_lengths.tolist()}")
    return max(float(np.abs(got[i, :n] - expected[i, :n].numpy()).max()) for i, n in enumerate(got_lengths))
