"""`qslr bench infer`: clips/s of PyTorch eager, onnxruntime and TensorRT (when present) on the same inputs."""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path

import click
import numpy as np
import torch

from qslr.deploy import tensor_names as names
from qslr.deploy.export import int8_export
from qslr.deploy.export.onnx_export import export_onnx, onnx_session
from qslr.deploy.served import example_inputs, served_from_checkpoint
from qslr.pipelines.progress import counting, progress_bar
from qslr.tools.bench_models import checkpoint_or_quick_one, untrained_checkpoint
from qslr.tools.benchmark_report import Rate, measure, report, with_ratios
from qslr.train.checkpointing import load_trained


@click.command("infer")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="[default: the demo's best.pt, else a quickly trained one]")
@click.option("--batch", "batches", type=int, multiple=True, default=(1, 4, 16), show_default=True)
@click.option("--frames", type=int, default=120, show_default=True, help="Frames per clip.")
@click.option("--threads", type=int, default=2, show_default=True, help="Threads for PyTorch and onnxruntime alike.")
@click.option("--repeats", type=int, default=5, show_default=True)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--untrained", "untrained_preset", default=None,
              help="Instead of a trained checkpoint, PRESET's model with random weights (e.g. phoenix2014-vac: "
                   "ResNet-18 at 224x224), fed --size frames; the INT8 graph is calibrated on the demo's videos "
                   "resized to that size.")
@click.option("--size", type=int, default=256, show_default=True, help="--untrained: frame height and width.")
@click.option("--calibration-clips", type=int, default=16, show_default=True,
              help="Clips the INT8 graph is calibrated on.")
@click.option("--json-out", type=click.Path(dir_okay=False, path_type=Path), default=Path("bench-results/infer.json"),
              show_default=True)
def bench_infer(checkpoint: Path | None, batches: tuple[int, ...], frames: int, threads: int, repeats: int,
                device: str, untrained_preset: str | None, size: int, calibration_clips: int,
                json_out: Path) -> None:
    """Served signature (uint8 frames -> log-probabilities) at several batch sizes, one run."""
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="qslr-bench-infer-") as tmp:
        checkpoint, data = checkpoint_or_quick_one(None if untrained_preset else checkpoint, Path(tmp))
        if untrained_preset:
            checkpoint = untrained_checkpoint(untrained_preset, Path(tmp), size)
        spec = load_trained(checkpoint).input
        height, width = spec.height, spec.width
        onnx_path = Path(tmp) / "model.onnx"
        export_onnx(checkpoint, onnx_path, height, width)
        int8_path = Path(tmp) / "model.int8.onnx"
        calibration = int8_export.calibration_set(data, calibration_clips, height, width)
        int8_export.quantise_graph(onnx_path, int8_path, calibration)
        # The fp16 graph, as a TensorRT engine is built from it; onnxruntime's CPU kernels are float32, so here it
        # shows what the casts around them cost, not a speed-up.
        half_path = export_onnx(checkpoint, Path(tmp) / "model.fp16.onnx", height, width, precision="fp16").path
        served, _ = served_from_checkpoint(checkpoint, frame_size=(height, width))
        target = torch.device(device)
        served = served.to(target)
        session = onnx_session(onnx_path, threads=threads)
        half_session = onnx_session(half_path, threads=threads)
        int8_session = onnx_session(int8_path, threads=threads)
        engine = _engine(half_path, Path(tmp), height, width, max(batches), frames) if device == "cuda" else None
        rates, notes = [], {}
        with progress_bar("clips") as progress:
            runs = (4 + (engine is not None)) * (1 + repeats)  # per contender, 1 warm-up run
            task = progress.add_task("inferring", total=runs * sum(batches))
            for batch in batches:
                clips, lengths = example_inputs(batch, frames, height, width)
                contenders = {f"eager b{batch}": lambda c=clips, n=lengths: _eager(served, c, n, target)}
                contenders[f"onnxruntime b{batch}"] = lambda c=clips, n=lengths: _ort(session, c, n)
                contenders[f"onnxruntime fp16 b{batch}"] = lambda c=clips, n=lengths: _ort(half_session, c, n)
                contenders[f"onnxruntime int8 b{batch}"] = lambda c=clips, n=lengths: _ort(int8_session, c, n)
                if engine is not None:
                    contenders[f"tensorrt b{batch}"] = lambda c=clips, n=lengths: _trt(engine, c, n)
                batch_rates = [Rate(name, measure(counting(work, progress, task), repeats))
                               for name, work in contenders.items()]
                rates += with_ratios(batch_rates, f"eager b{batch}")
        notes["frames_per_s"] = {r.name: r.median * frames for r in rates}
        by_name = {r.name: r.median for r in rates}
        notes["int8_over_fp32_onnxruntime"] = {f"b{b}": by_name[f"onnxruntime int8 b{b}"] / by_name[f"onnxruntime b{b}"]
                                               for b in batches}
        if engine is None:
            notes["tensorrt"] = ("not measured: needs --device cuda, TensorRT and a GPU" if device == "cpu" or
                                 importlib.util.find_spec("tensorrt") is None else "engine build failed")
    report(f"Inference, {frames} frames of {height}x{width}, {threads} threads, {device}", "clips/s", rates,
           "eager (same batch)", {"batches": list(batches), "frames": frames, "threads": threads,
                                  "repeats": repeats, "device": device, "checkpoint": str(checkpoint),
                                  "untrained": untrained_preset, "calibration_clips": len(calibration)},
           json_out, notes=notes)


def _eager(served, clips, lengths, device) -> int:
    with torch.no_grad():
        served(clips.to(device), lengths.to(device))[0].cpu()
    return len(clips)


def _ort(session, clips, lengths) -> int:
    session.run(list(names.OUTPUTS), {names.FRAMES: clips.numpy(), names.LENGTHS: lengths.numpy()})
    return len(clips)


def _engine(half_path: Path, folder: Path, height: int, width: int, max_batch: int, frames: int):
    """An FP16 engine, built from the FP16 graph as `qslr export tensorrt` builds it."""
    if importlib.util.find_spec("tensorrt") is None:
        return None
    from qslr.deploy.export.tensorrt_engine import EngineRunner, ShapeRange, build_engine

    shapes = ShapeRange(1, max(1, max_batch // 2), max_batch, frames, frames, frames)
    return EngineRunner(build_engine(half_path, folder / "model.plan", shapes, height, width, "fp16"))


def _trt(engine, clips, lengths) -> int:
    engine(np.ascontiguousarray(clips.numpy()), lengths.numpy())
    return len(clips)
