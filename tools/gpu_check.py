"""`qslr bench gpu-check`: every GPU path in one go, one JSON report; each part skips with its reason.

Parts: DALI `mixed` decoding and augmentation against the CPU reference loader, the served `dali-gpu`
decoder against PyAV, a DDP + SyncBatchNorm + AMP training run under torchrun on all GPUs, ONNX export
(fp32 and fp16) and parity, TensorRT engines of both graphs and their parity, the torch-tensorrt fp16
compile, and every benchmark with `--device cuda` where it has one.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import click
import torch
from rich.console import Console
from rich.table import Table

from qslr.pipelines.atomic_output import write_text_atomic
from qslr.pipelines.augmentation import PIXEL_SCALE
from qslr.pipelines.dali_loader import NVDEC_VP9_MIN_SIZE

# NVDEC decodes nothing smaller than its minimum: the demo's 72x72 frames would fail on the GPU.
FRAME_SIZE = max(NVDEC_VP9_MIN_SIZE)
CROP_SIZE = 112


@dataclass
class CheckResult:
    name: str
    status: str  # passed, failed, skipped
    seconds: float = 0.0
    details: dict = field(default_factory=dict)


class Skip(Exception):
    """A part whose dependency is absent; the message is the reason."""


def _need(condition: bool, reason: str) -> None:
    if not condition:
        raise Skip(reason)


def _qslr(*args: str, timeout: float = 600) -> str:
    command = [sys.executable, "-m", "qslr.tools.cli", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"qslr {' '.join(args)} failed: {(result.stderr or result.stdout)[-600:]}")
    return result.stdout + result.stderr


class GpuCheck:
    def __init__(self, workdir: Path, steps: int, videos: int):
        self.workdir, self.steps, self.videos = workdir, steps, videos
        self.cuda = torch.cuda.is_available()
        self.dali = importlib.util.find_spec("nvidia.dali") is not None
        self.tensorrt = importlib.util.find_spec("tensorrt") is not None
        self.dataset = workdir / "synthetic"
        self.checkpoint = workdir / "run" / "checkpoints" / "last.pt"

    def environment(self) -> dict:
        return {"torch": torch.__version__, "cuda": torch.version.cuda, "gpus": torch.cuda.device_count(),
                "device": torch.cuda.get_device_name(0) if self.cuda else None, "dali": self.dali,
                "tensorrt": self.tensorrt}

    def corpus(self) -> dict:
        _qslr("data", "synth", "--out", str(self.dataset), "--videos", str(self.videos), "--vocab", "30",
              "--max-glosses", "8", "--size", str(FRAME_SIZE))
        return {"videos": self.videos, "frame_size": FRAME_SIZE}

    def dali_gpu(self) -> dict:
        _need(self.cuda, "no CUDA device")
        _need(self.dali, "nvidia-dali is not installed")
        from qslr.pipelines.augmentation import ClipSettings
        from qslr.pipelines.clip_source import ClipSource
        from qslr.pipelines.loaders import build_loader

        settings = ClipSettings(crop_size=CROP_SIZE, flip_prob=0.5, temporal_rescale=0.2, min_frames=16,
                                max_frames=230)
        source = ClipSource.open(self.dataset, "train", settings, train=True, seed=1)
        gpu = build_loader("dali", source, 8, shuffle=True, drop_last=False, workers=2, device="cuda")
        cpu = build_loader("reference", source, 8, shuffle=True, drop_last=False, workers=2)
        worst, batches = 0.0, 0
        for a, b in zip(gpu, cpu, strict=True):
            if a.ids != b.ids or not torch.equal(a.lengths, b.lengths):
                raise AssertionError("DALI (GPU) and the reference loader disagree on batch composition")
            worst = max(worst, (a.videos.cpu() - b.videos).abs().max().item() * PIXEL_SCALE)
            batches += 1
        if worst > 2.0:
            raise AssertionError(f"DALI (GPU) differs from the reference loader by {worst:.1f} grey levels")
        return {"batches": batches, "max_difference_grey_levels": worst}

    def train_ddp_amp(self) -> dict:
        _need(self.cuda, "no CUDA device")
        gpus = torch.cuda.device_count()
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}", "-m",
                   "qslr.train", "--config", "synthetic", f"data.root={self.dataset}",
                   f"train.work_dir={self.workdir / 'run'}", "train.device=cuda", "train.amp=bf16",
                   f"train.max_steps={self.steps}", "train.epochs=1000", f"data.crop_size={CROP_SIZE}",
                   f"data.loader={'dali' if self.dali else 'reference'}"]
        started = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True, timeout=900)
        if result.returncode != 0:
            raise RuntimeError(f"training failed: {result.stdout[-800:]}{result.stderr[-800:]}")
        digests = set(re.findall(r"weights digest (\w+)", result.stdout + result.stderr))
        if len(digests) != 1:
            raise AssertionError(f"ranks ended with different weights: {digests}")
        metrics = (self.workdir / "run" / "metrics.csv").read_text().splitlines()
        return {"gpus": gpus, "steps": self.steps, "seconds": time.perf_counter() - started,
                "sync_batchnorm": gpus > 1, "last_metrics": metrics[-1], "header": metrics[0]}

    def dali_gpu_decoder(self) -> dict:
        """The served `dali-gpu` video decoder (NVDEC) against PyAV on the same uploads."""
        _need(self.cuda, "no CUDA device")
        _need(self.dali, "nvidia-dali is not installed")
        from qslr.deploy.served_limits import ServedLimits
        from qslr.deploy.served_video import clip_decoder

        videos = sorted((self.dataset / "videos" / "test").glob("*.webm"))[:16]
        _need(bool(videos), "no test videos (the corpus part did not run)")
        limits = ServedLimits()
        gpu = clip_decoder("dali", FRAME_SIZE, FRAME_SIZE, limits, device="gpu").decode(videos)
        cpu = clip_decoder("pyav", FRAME_SIZE, FRAME_SIZE, limits).decode(videos)
        worst = 0
        for video, a, b in zip(videos, gpu, cpu, strict=True):
            if isinstance(a, Exception) or isinstance(b, Exception):
                raise AssertionError(f"{video.name}: NVDEC {a!r}, PyAV {b!r}")
            if a.frames.shape != b.frames.shape:
                raise AssertionError(f"{video.name}: NVDEC gave {a.frames.shape}, PyAV {b.frames.shape}")
            worst = max(worst, int(abs(a.frames.astype(int) - b.frames.astype(int)).max()))
        # Both decode the same VP9 bitstream; the colour conversion may round differently.
        if worst > 8:
            raise AssertionError(f"NVDEC and PyAV differ by {worst} grey levels")
        return {"videos": len(videos), "max_difference_grey_levels": worst}

    def onnx(self) -> dict:
        _need(self.checkpoint.is_file(), "no checkpoint (the training part did not run)")
        lines = {}
        for flag, name in (("--fp32", "m.onnx"), ("--fp16", "m.fp16.onnx")):
            out = _qslr("export", "onnx", "--checkpoint", str(self.checkpoint), "--out", str(self.workdir / name),
                        flag)
            lines[flag[2:]] = out.strip().splitlines()[-1]
        return lines

    def tensorrt_engine(self) -> dict:
        _need(self.cuda, "no CUDA device")
        _need(self.tensorrt, "TensorRT is not installed")
        _need((self.workdir / "m.fp16.onnx").is_file(), "no ONNX model (the export part did not run)")
        lines = {}
        for graph, plan in (("m.onnx", "m.plan"), ("m.fp16.onnx", "m.fp16.plan")):
            out = _qslr("export", "tensorrt", "--onnx", str(self.workdir / graph), "--out", str(self.workdir / plan),
                        "--min", "1x16", "--opt", "4x120", "--max", "16x230")
            lines[plan] = out.strip().splitlines()[-1]
        return lines

    def torch_tensorrt(self) -> dict:
        _need(self.cuda, "no CUDA device")
        _need(importlib.util.find_spec("torch_tensorrt") is not None, "torch-tensorrt is not installed")
        _need(self.checkpoint.is_file(), "no checkpoint (the training part did not run)")
        out = _qslr("export", "torch-trt", "--checkpoint", str(self.checkpoint), "--out", str(self.workdir / "m.ep"),
                    "--fp16", "--min", "1x16", "--opt", "4x120", "--max", "8x230")
        return {"output": out.strip().splitlines()[-1]}

    def benchmarks(self) -> dict:
        device = "cuda" if self.cuda else "cpu"
        reports = {}
        for name, args in (("data", ["--data", str(self.dataset), "--device", device, "--repeats", "2"]),
                           ("infer", ["--device", device, "--repeats", "3"]
                            + (["--checkpoint", str(self.checkpoint)] if self.checkpoint.is_file() else [])),
                           ("decode", ["--repeats", "3"]), ("score", ["--repeats", "3"])):
            json_out = self.workdir / f"bench-{name}.json"
            _qslr("bench", name, *args, "--json-out", str(json_out))
            reports[name] = json.loads(json_out.read_text())
        return reports


def run_checks(check: GpuCheck, parts: list[tuple[str, Callable[[], dict]]],
               budget_s: float = 420.0) -> list[CheckResult]:
    """Each part passes, fails or is skipped with its reason; parts left when the time budget is spent are skipped,
    so the report always comes back from a machine lent for a few minutes."""
    results = []
    begun = time.perf_counter()
    for name, part in parts:
        started = time.perf_counter()
        if started - begun > budget_s:
            results.append(CheckResult(name, "skipped", 0.0, {"reason": f"time budget of {budget_s:.0f} s spent"}))
            continue
        try:
            details = part()
            results.append(CheckResult(name, "passed", time.perf_counter() - started, details))
        except Skip as reason:
            results.append(CheckResult(name, "skipped", 0.0, {"reason": str(reason)}))
        except ModuleNotFoundError as missing:
            results.append(CheckResult(name, "skipped", 0.0, {"reason": f"needs {missing.name}, not installed here"}))
        except Exception as exc:  # noqa: BLE001 - one failed part must not hide the others
            results.append(CheckResult(name, "failed", time.perf_counter() - started, {"error": str(exc)[-1500:]}))
    return results


@click.command("gpu-check")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("bench-results/gpu-check.json"),
              show_default=True)
@click.option("--steps", type=int, default=300, show_default=True, help="Training steps of the DDP + AMP part.")
@click.option("--videos", type=int, default=300, show_default=True, help="Size of the synthetic corpus used.")
@click.option("--skip-benchmarks", is_flag=True, help="Only the functional parts.")
@click.option("--budget-s", type=float, default=420.0, show_default=True,
              help="Parts not started within this many seconds are skipped, so the report always comes back.")
def gpu_check(out: Path, steps: int, videos: int, skip_benchmarks: bool, budget_s: float) -> None:
    """Prove every GPU path on this machine; writes one JSON report and prints a table."""
    with tempfile.TemporaryDirectory(prefix="qslr-gpu-check-") as tmp:
        check = GpuCheck(Path(tmp), steps, videos)
        parts = [("synthetic corpus", check.corpus), ("DALI mixed decoding vs CPU", check.dali_gpu),
                 ("served dali-gpu decoder vs PyAV", check.dali_gpu_decoder),
                 ("DDP + SyncBatchNorm + AMP training", check.train_ddp_amp),
                 ("ONNX export fp32 + fp16 + parity", check.onnx),
                 ("TensorRT engines fp32 + fp16 + parity", check.tensorrt_engine),
                 ("torch-tensorrt fp16 compile", check.torch_tensorrt)]
        if not skip_benchmarks:
            parts.append(("benchmarks", check.benchmarks))
        results = run_checks(check, parts, budget_s)
        payload = {"environment": check.environment(), "checks": [asdict(r) for r in results]}
    write_text_atomic(out, json.dumps(payload, indent=1, default=str) + "\n")
    table = Table(title=f"GPU check: {payload['environment']['device'] or 'no CUDA device'}")
    for column in ("part", "status", "seconds", "details"):
        table.add_column(column)
    for r in results:
        detail = r.details.get("reason") or r.details.get("error") or ", ".join(
            f"{k}={v}" for k, v in r.details.items() if not isinstance(v, dict))[:80]
        table.add_row(r.name, r.status, f"{r.seconds:.0f}", str(detail)[:90])
    Console(width=140).print(table)
    click.echo(f"report: {out}")
    if any(r.status == "failed" for r in results):
        raise SystemExit(1)
