"""`qslr bench gpu-check`: a proof of every GPU path this machine can run, part by part, in one JSON report.

Each part ends proven, failed, or not proven with the reason (a package missing, one GPU, the time budget, a step
it builds on that failed); the exit status is 0 only when every part asked for is proven. A machine with PyTorch
and CUDA alone proves the first five (training under AMP bf16 and fp16, exact resume, inference against the CPU,
torch.export); onnxruntime-gpu, DALI, TensorRT, torch-tensorrt and a second GPU each add their parts. The parts
that prove most for their time run first.
"""

from __future__ import annotations

import importlib.util
import json
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import click
import torch
from rich.console import Console
from rich.table import Table

from qslr.pipelines.atomic_output import write_text_atomic
from qslr.tools import gpu_decoding_checks, gpu_model_checks, gpu_training_checks
from qslr.tools.gpu_proof import FAILED, PROVEN, Outcome, Part, Requirement, prove
from qslr.tools.gpu_workspace import CheckSettings, Workspace

# Exit statuses: every part asked for proven, one of them failed, or none failed but some could not run here.
EXIT_PROVEN, EXIT_FAILED, EXIT_NOT_PROVEN = 0, 1, 3


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package (nvidia, for nvidia.dali) missing
        return False


def onnxruntime_on_cuda() -> bool:
    """Whether onnxruntime offers its CUDA provider (the onnxruntime-gpu build); True where onnxruntime is absent,
    which a requirement of its own reports."""
    if not installed("onnxruntime"):
        return True
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


CUDA = Requirement("no CUDA device", torch.cuda.is_available)
# None at all is CUDA's to report.
SEVERAL_GPUS = Requirement("one GPU: no NCCL collective, no SyncBatchNorm", lambda: torch.cuda.device_count() != 1)
ONNXRUNTIME_CUDA = Requirement("onnxruntime has no CUDA provider here (the onnxruntime-gpu build)", onnxruntime_on_cuda)


def package(module: str, name: str) -> Requirement:
    return Requirement(f"{name} is not installed", partial(installed, module))


ONNX = (package("onnx", "onnx"), package("onnxruntime", "onnxruntime"))
DALI = package("nvidia.dali", "nvidia-dali")


@dataclass(frozen=True)
class PartSpec:
    id: str
    title: str
    needs: tuple[Requirement, ...]
    run: Callable[[Workspace], dict]


def _bf16(workspace: Workspace) -> dict:
    return gpu_training_checks.amp_training(workspace.reference_run(), "bf16")


def _benchmarks(workspace: Workspace) -> dict:
    reports = {}
    for name, args in (("data", ["--data", str(workspace.corpus()), "--device", "cuda", "--repeats", "2"]),
                       ("infer", ["--device", "cuda", "--repeats", "3", "--checkpoint", str(workspace.checkpoint())]),
                       ("decode", ["--repeats", "3"]), ("score", ["--repeats", "3"])):
        json_out = workspace.root / f"bench-{name}.json"
        gpu_model_checks.qslr("bench", name, *args, "--json-out", str(json_out))
        reports[name] = json.loads(json_out.read_text())
    return reports


# In the order they run: the cheap ones that prove most first, then what needs more packages, more time or GPUs.
PARTS = (
    PartSpec("train-bf16", "CUDA training, reference loader, AMP bf16", (CUDA,), _bf16),
    PartSpec("inference", "CUDA inference (fp32, fp16) against the CPU's", (CUDA,), gpu_model_checks.cuda_inference),
    PartSpec("torch-export", "torch.export's program on CUDA against eager", (CUDA,),
             gpu_model_checks.torch_export_on_cuda),
    PartSpec("train-fp16", "CUDA training, AMP fp16 with its GradScaler", (CUDA,), gpu_training_checks.fp16_training),
    PartSpec("resume", "exact resume on CUDA (fp16, GradScaler)", (CUDA,), gpu_training_checks.exact_resume),
    PartSpec("onnxruntime-cuda", "onnxruntime's CUDA provider against PyTorch on the CPU",
             (CUDA, *ONNX, ONNXRUNTIME_CUDA), gpu_model_checks.onnxruntime_cuda),
    PartSpec("dali-loader", "DALI mixed (NVDEC) loader against the reference loader", (CUDA, DALI),
             gpu_decoding_checks.dali_loader),
    PartSpec("dali-decoder", "served dali-gpu decoder against PyAV", (CUDA, DALI), gpu_decoding_checks.dali_decoder),
    PartSpec("tensorrt", "TensorRT engines (fp32, fp16) against onnxruntime",
             (CUDA, package("tensorrt", "TensorRT"), *ONNX), gpu_model_checks.tensorrt_engines),
    PartSpec("torch-tensorrt", "torch-tensorrt fp16 program, saved and loaded, against eager",
             (CUDA, package("torch_tensorrt", "torch-tensorrt")), gpu_model_checks.torch_tensorrt_program),
    PartSpec("ddp", "DDP + SyncBatchNorm + AMP bf16 on every GPU (NCCL)", (CUDA, SEVERAL_GPUS),
             gpu_training_checks.ddp_training),
    PartSpec("benchmarks", "every benchmark with --device cuda", (CUDA,), _benchmarks),
)
# Measurements, not proofs, and longer than the default budget allows: run when asked for by name.
ON_REQUEST = {"benchmarks"}


def asked_parts(workspace: Workspace, only: tuple[str, ...]) -> list[Part]:
    chosen = [spec for spec in PARTS if (spec.id in only if only else spec.id not in ON_REQUEST)]
    return [Part(spec.id, spec.title, spec.needs, partial(spec.run, workspace)) for spec in chosen]


def environment() -> dict:
    cuda = torch.cuda.is_available()
    return {"torch": torch.__version__, "cuda": torch.version.cuda, "gpus": torch.cuda.device_count(),
            "device": torch.cuda.get_device_name(0) if cuda else None,
            **{name: installed(module) for name, module in (("dali", "nvidia.dali"), ("tensorrt", "tensorrt"),
                                                            ("torch_tensorrt", "torch_tensorrt"),
                                                            ("onnxruntime", "onnxruntime"))}}


@click.command("gpu-check")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("bench-results/gpu-check.json"),
              show_default=True)
@click.option("--only", multiple=True, type=click.Choice([spec.id for spec in PARTS]),
              help="Prove this part only (repeatable); the exit status then speaks for these alone. [default: every "
                   f"part but {', '.join(sorted(ON_REQUEST))}]")
@click.option("--steps", type=click.IntRange(min=1), default=120, show_default=True,
              help="Optimiser steps of the bf16 training run (and of DDP's); its checkpoint serves the other parts.")
@click.option("--videos", type=click.IntRange(min=20), default=200, show_default=True,
              help="Size of the synthetic corpus used.")
@click.option("--workers", type=click.IntRange(min=1), default=4, show_default=True,
              help="Reference loader processes and corpus writers.")
@click.option("--budget-s", type=float, default=420.0, show_default=True,
              help="Parts not started within this many seconds are not proven, so the report always comes back.")
def gpu_check(out: Path, only: tuple[str, ...], steps: int, videos: int, workers: int, budget_s: float) -> None:
    """Prove every GPU path this machine can run; writes one JSON report and prints a table. Exit status 0: every
    part asked for proven; 1: one failed; 3: none failed, some not proven (why is in the table)."""
    with tempfile.TemporaryDirectory(prefix="qslr-gpu-check-") as tmp:
        workspace = Workspace(Path(tmp), CheckSettings(videos=videos, steps=steps, workers=workers))
        outcomes = prove(asked_parts(workspace, only), budget_s)
    payload = {"environment": environment(), "budget_s": budget_s, "parts": [asdict(o) for o in outcomes]}
    write_text_atomic(out, json.dumps(payload, indent=1, default=str) + "\n")
    _print_table(payload["environment"], outcomes)
    click.echo(f"report: {out}")
    proven = sum(o.status == PROVEN for o in outcomes)
    click.echo(f"{proven} of {len(outcomes)} parts proven")
    if proven < len(outcomes):
        raise SystemExit(EXIT_FAILED if any(o.status == FAILED for o in outcomes) else EXIT_NOT_PROVEN)


def _print_table(machine: dict, outcomes: list[Outcome]) -> None:
    table = Table(title=f"GPU check: {machine['device'] or 'no CUDA device'} (PyTorch {machine['torch']})")
    for column in ("part", "status", "seconds", "why / what was measured"):
        table.add_column(column)
    for outcome in outcomes:
        detail = outcome.reason or ", ".join(f"{key}={value}" for key, value in outcome.details.items()
                                             if not isinstance(value, dict))
        nested = [f"{key}: {value.get('max_difference', 0):.1e}" for key, value in outcome.details.items()
                  if isinstance(value, dict) and "max_difference" in value]
        table.add_row(f"{outcome.part}: {outcome.title}", outcome.status, f"{outcome.seconds:.0f}",
                      (detail or "; ".join(nested))[:160])
    Console(width=160).print(table)
