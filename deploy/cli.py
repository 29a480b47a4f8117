"""`qslr export`, `qslr triton`, `qslr serve` and `qslr infer`: from a checkpoint to a served model."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import click

from qslr.deploy.export.int8_choices import CALIBRATION_METHODS, DEFAULT_METHOD
from qslr.deploy.export.tensorrt_engine import ShapeRange
from qslr.deploy.frontends.recognise_cli import chosen_framing, with_framing_options
from qslr.deploy.served_limits import ServedLimits
from qslr.deploy.serving.repository_choices import VIDEO_DECODERS, VISUAL_BACKENDS

if TYPE_CHECKING:
    from qslr.train.checkpointing import TrainedModel

# The default profile covers the default served limits exactly, so a default engine serves in a default repository.
_DEFAULT_PROFILE = ShapeRange.covering(ServedLimits()).shapes()
_SHAPES = [
    click.option("--min", "minimum", default=_DEFAULT_PROFILE[0], show_default=True,
                 help="Smallest BATCHxFRAMES of the profile."),
    click.option("--opt", "optimum", default=_DEFAULT_PROFILE[1], show_default=True,
                 help="BATCHxFRAMES TensorRT tunes for."),
    click.option("--max", "maximum", default=_DEFAULT_PROFILE[2], show_default=True, help="Largest BATCHxFRAMES."),
]


def _with_shapes(function):
    for option in reversed(_SHAPES):
        function = option(function)
    return function


# An engine's profile: by default as above, its batch lowered to what TensorRT holds (`fitting_profile`).
_ENGINE_SHAPES = [
    click.option("--min", "minimum", default=None, help=f"Smallest BATCHxFRAMES of the profile [default: "
                                                        f"{_DEFAULT_PROFILE[0]}]."),
    click.option("--opt", "optimum", default=None, help=f"BATCHxFRAMES TensorRT tunes for [default: "
                                                        f"{_DEFAULT_PROFILE[1]}, clamped to the default --max]."),
    click.option("--max", "maximum", default=None,
                 help=f"Largest BATCHxFRAMES [default: {_DEFAULT_PROFILE[2]}, the batch lowered to the largest whose "
                      f"tensors TensorRT can hold]; a profile with a tensor over 2^31-1 elements is refused."),
]


def _with_engine_shapes(function):
    for option in reversed(_ENGINE_SHAPES):
        function = option(function)
    return function


@click.group("export")
def export() -> None:
    """Export a checkpoint to ONNX, TensorRT or torch-tensorrt."""


@export.command("onnx")
@click.option("--checkpoint", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--height", type=int, default=None, help="Input frame height [default: the training videos'].")
@click.option("--width", type=int, default=None, help="Input frame width [default: the training videos'].")
@click.option("--top-k", type=int, default=None, help="Also output the k best classes per step (as WeNet does).")
@click.option("--fp16/--fp32", default=False, show_default=True,
              help="Frame encoder, temporal CNN and classifier in half precision (the BiLSTM stays float32): the "
                   "graph `qslr export tensorrt` builds an FP16 engine from.")
@click.option("--int8", is_flag=True,
              help="Quantise the frame encoder's and temporal CNN's convolutions to INT8 (a QDQ graph for onnxruntime "
                   "and TensorRT), calibrated on clips of the training split.")
@click.option("--calibration-data", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="--int8: a prepared dataset (its train split) or a folder of videos [default: the checkpoint's "
                   "training data].")
@click.option("--calibration-clips", type=click.IntRange(min=1), default=64, show_default=True,
              help="--int8: how many clips to calibrate on.")
@click.option("--calibration-method", type=click.Choice(CALIBRATION_METHODS), default=DEFAULT_METHOD,
              show_default=True, help="--int8: how activation ranges become scales (onnxruntime's calibrators).")
@click.option("--check/--no-check", default=True, show_default=True,
              help="Compare onnxruntime with PyTorch on mixed-length batches after the export (--int8: on the "
                   "calibration clips, greedy labels and probabilities).")
def export_onnx_command(checkpoint: Path, out: Path, height: int | None, width: int | None, top_k: int | None,
                        fp16: bool, int8: bool, calibration_data: Path | None, calibration_clips: int,
                        calibration_method: str, check: bool) -> None:
    """uint8 frames (B, T, H, W, 3) + lengths -> log-probabilities (B, T', V) + lengths; dynamic B and T."""
    from qslr.deploy.export import export_checks
    from qslr.deploy.export.graph_checks import tensorrt_problems
    from qslr.deploy.export.onnx_export import export_onnx
    from qslr.deploy.served import frame_size
    from qslr.train.checkpointing import load_trained

    if fp16 and int8:
        raise click.UsageError("--fp16 and --int8 exclude each other")
    trained = load_trained(checkpoint)  # once: for the frame size, the calibration data, the export and its check
    height, width = frame_size(checkpoint, (trained.input.height, trained.input.width), height, width)
    precision = "int8" if int8 else "fp16" if fp16 else "fp32"
    clips = _calibration(checkpoint, trained, calibration_data, calibration_clips, height, width) if int8 else []
    try:
        if int8:
            from qslr.deploy.export.int8_export import export_int8

            info = export_int8(trained, out, height, width, clips, calibration_method, top_k)
        else:
            info = export_onnx(trained, out, height, width, top_k, precision=precision)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {info.path}: frames {height}x{width}, crop {info.crop_size}, {info.num_classes} classes, "
               f"{precision}" + (f" ({calibration_method} calibration on {len(clips)} clips)" if int8 else ""))
    for problem in tensorrt_problems(out):
        click.echo(f"warning: {problem}", err=True)
    if int8:
        fusion = export_checks.int8_fusion(out)
        click.echo("\n".join(fusion.lines()))
        for warning in fusion.warnings():
            click.echo(f"warning: {warning}", err=True)
    if not check:
        return
    result = (export_checks.int8_agreement(trained, out, clips) if int8 else
              export_checks.parity(trained, out, top_k, height, width, precision))
    click.echo("\n".join(result.lines()))
    try:
        result.check()
    except export_checks.ExportCheckError as exc:
        raise click.ClickException(str(exc)) from None


def _calibration(checkpoint: Path, trained: TrainedModel, data: Path | None, count: int, height: int,
                 width: int) -> list:
    from qslr.deploy.export.int8_export import CalibrationError, calibration_set

    if data is None:
        data = Path(trained.config.data.root)
        if not (data / "vocab.json").is_file():
            raise click.UsageError(f"{checkpoint}: its training data {data} is not here; give --calibration-data")
    try:
        return calibration_set(data, count, height, width)
    except CalibrationError as exc:
        raise click.ClickException(str(exc)) from None


def _engine_precision(fp16: bool | None, int8: bool) -> str | None:
    if int8 and fp16 is not None:
        raise click.UsageError("--int8 excludes --fp16 and --fp32")
    return "int8" if int8 else None if fp16 is None else "fp16" if fp16 else "fp32"


@export.command("tensorrt")
@click.option("--onnx", "onnx_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--fp16/--fp32", default=None,
              help="The engine's precision, which must be the graph's (`qslr export onnx --fp16` writes the FP16 "
                   "one) [default: the graph's].")
@click.option("--int8", is_flag=True,
              help="An INT8 engine: the graph must be the QDQ one of `qslr export onnx --int8`.")
@_with_engine_shapes
@click.option("--timing-cache", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Reuse and update TensorRT's kernel timing cache (faster rebuilds).")
def export_tensorrt_command(onnx_path: Path, out: Path, fp16: bool | None, int8: bool, minimum: str | None,
                            optimum: str | None, maximum: str | None, timing_cache: Path | None) -> None:
    """Build a TensorRT engine with an optimisation profile over (batch, frames), then check it."""
    from qslr.deploy.export.graph_files import exported_frame_size, reading_graph
    from qslr.deploy.export.onnx_export import read_metadata
    from qslr.deploy.export.tensorrt_engine import (
        ShapeRange,
        TensorRTUnavailableError,
        build_engine,
        engine_parity,
        fitting_profile,
        read_engine_record,
    )
    from qslr.deploy.served import example_inputs

    try:
        with reading_graph(onnx_path):
            height, width = exported_frame_size(read_metadata(onnx_path), onnx_path)
        fitted = fitting_profile(onnx_path, height, width) if maximum is None else ShapeRange.covering(ServedLimits())
        if maximum is None and fitted.max_batch < ServedLimits.max_batch:
            click.echo(f"profile up to {fitted.shapes()[2]}: at {_DEFAULT_PROFILE[2]} a tensor of {onnx_path.name} "
                       f"would hold more elements than TensorRT holds in one", err=True)
        shapes = ShapeRange.parse(*(given or default for given, default in zip((minimum, optimum, maximum),
                                                                                   fitted.shapes(), strict=True)))
        # None: the graph's own precision; a flag must agree with it.
        build_engine(onnx_path, out, shapes, height, width, _engine_precision(fp16, int8),
                     timing_cache)
        frames, lengths = example_inputs(shapes.opt_batch, shapes.opt_time, height, width)
        worst = engine_parity(out, onnx_path, frames.numpy(), lengths.numpy())
    except (ValueError, TensorRTUnavailableError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from None
    record = read_engine_record(out)
    click.echo(f"wrote {out}: TensorRT vs onnxruntime max |difference| {worst:.2e} ({record.precision.upper()}); "
               f"{(record.device_memory_bytes or 0) / 2**30:.2f} GiB of device memory per execution context at "
               f"{shapes.shapes()[2]}")


@export.command("torch-trt")
@click.option("--checkpoint", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--height", type=int, default=None)
@click.option("--width", type=int, default=None)
@click.option("--fp16/--fp32", default=True, show_default=True,
              help="Frame encoder, temporal CNN and classifier in half precision; the BiLSTM stays float32.")
@_with_shapes
def export_torch_trt_command(checkpoint: Path, out: Path, height: int | None, width: int | None, fp16: bool,
                             minimum: str, optimum: str, maximum: str) -> None:
    """Compile the served model with torch-tensorrt for use inside PyTorch."""
    from qslr.deploy.export.tensorrt_engine import ShapeRange, TensorRTUnavailableError
    from qslr.deploy.export.torch_trt import compile_torch_trt
    from qslr.deploy.served import checkpoint_frame_size

    height, width = checkpoint_frame_size(checkpoint, height, width)
    try:
        path = compile_torch_trt(checkpoint, out, ShapeRange.parse(minimum, optimum, maximum), height, width, fp16)
    except (ValueError, TensorRTUnavailableError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {path}")


@export.command("check")
@click.argument("onnx_path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def check_command(onnx_path: Path) -> None:
    """Operators, input types, opset and ranks of an exported graph against TensorRT's ONNX support table."""
    from qslr.deploy.export.graph_checks import operator_counts, tensorrt_problems, tensorrt_table
    from qslr.deploy.export.graph_files import GraphReadError, reading_graph

    version = tensorrt_table()["source"]["tensorrt_version"]
    try:
        with reading_graph(onnx_path):
            problems = tensorrt_problems(onnx_path)
            operators = dict(sorted(operator_counts(onnx_path).items()))
    except GraphReadError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps({"tensorrt": version, "operators": operators, "tensorrt_problems": problems}, indent=1))
    if problems:
        raise click.ClickException(f"{onnx_path}: {len(problems)} problem(s) for TensorRT {version}'s ONNX parser")


@click.group("triton")
def triton() -> None:
    """Build Triton model repositories."""


@triton.command("build")
@click.option("--checkpoint", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--visual", type=click.Choice(VISUAL_BACKENDS), default="onnxruntime", show_default=True,
              help="onnxruntime in a python model (CPU), or a TensorRT plan (GPU; needs --engine).")
@click.option("--engine", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None)
@click.option("--height", type=int, default=None)
@click.option("--width", type=int, default=None)
@click.option("--max-batch-size", type=int, default=ServedLimits.max_batch, show_default=True,
              help="Served limit: requests per batch (a TensorRT engine's profile must reach it).")
@click.option("--dynamic-batching/--no-dynamic-batching", default=True, show_default=True)
@click.option("--max-queue-delay-us", type=int, default=0, show_default=True,
              help="How long a request may wait for batch-mates in each model's queue.")
@click.option("--visual-instances", type=int, default=1, show_default=True)
@click.option("--visual-threads", type=int, default=2, show_default=True, help="onnxruntime threads per instance.")
@click.option("--visual-max-batch-size", "visual_max_batch", type=int, default=None,
              help="The visual model's own batch limit (a TensorRT engine's profile must reach it), below the served "
                   "one where a context at the served batch does not fit the GPU [default: --max-batch-size, or "
                   "the --engine's profile batch where smaller].")
@click.option("--visual-max-padding", type=float, default=0.1, show_default=True,
              help="onnxruntime visual model: a batched call groups clips of similar lengths, padding at most this "
                   "share of their frames.")
@click.option("--decoder-instances", type=int, default=1, show_default=True,
              help="Instances of the ctc_decoder model (the CTC search; --decoder is the video decoder).")
@click.option("--preprocess-instances", type=int, default=1, show_default=True)
@click.option("--decoder", "video_decoder", type=click.Choice(VIDEO_DECODERS), default=None,
              help="How preprocess decodes uploads: dali (DALI's CPU decoder, the training loader's), dali-gpu "
                   "(NVDEC) or pyav (FFmpeg, any codec) [default: dali where DALI is installed, else pyav].")
@click.option("--preprocess-threads", type=int, default=2, show_default=True,
              help="Videos of a batch decoded at once per preprocess instance.")
@click.option("--min-frames", type=int, default=ServedLimits.min_frames, show_default=True,
              help="Served limit: shorter clips are padded to it (a TensorRT engine's profile must start there).")
@click.option("--max-frames", type=int, default=ServedLimits.max_frames, show_default=True,
              help="Served limit: frames per clip (cslr_frames, the visual model); longer videos go to cslr in "
                   "windows of at most this many frames.")
@click.option("--max-duration", type=float, default=ServedLimits.max_seconds, show_default=True,
              help="Served limit: the longest video cslr takes, in seconds.")
@click.option("--window", "window_frames", type=int, default=None,
              help="cslr: frames per window of a longer video [default: the checkpoint's decode settings].")
@click.option("--context", "context_frames", type=int, default=None,
              help="cslr: frames of context on each side of a window's kept middle [default: the checkpoint's].")
@click.option("--window-batch", type=int, default=None,
              help="cslr: windows of a long video sent to the visual model at once [default: 4, or the visual "
                   "model's batch limit if smaller].")
@click.option("--cslr-instances", type=int, default=2, show_default=True,
              help="cslr: videos worked on at once (a long one holds its instance until answered).")
@click.option("--beam-size", type=int, default=None,
              help="Default beam (0: greedy) [default: the checkpoint's decode settings].")
@click.option("--onnx", "visual_graph", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Serve this graph from `qslr export onnx` of the checkpoint (e.g. --int8 or --fp16) in the "
                   "onnxruntime visual model [default: a float32 export made here].")
@click.option("--overwrite", is_flag=True)
def triton_build(checkpoint: Path, out: Path, visual: str, engine: Path | None, height: int | None,
                 width: int | None, overwrite: bool, min_frames: int, max_frames: int, max_batch_size: int,
                 max_duration: float, **options) -> None:
    """A versioned repository: preprocess, visual, ctc_decoder, the cslr_clip / cslr_frames ensembles, and cslr
    (a video of any length up to --max-duration)."""
    from qslr.deploy import model_names as models
    from qslr.deploy.served import checkpoint_frame_size
    from qslr.deploy.serving.triton_repository import RepositorySettings, build_repository
    from qslr.pipelines.atomic_output import OutputExistsError

    height, width = checkpoint_frame_size(checkpoint, height, width)
    try:
        limits = ServedLimits(min_frames, max_frames, max_batch_size, max_duration)
        settings = RepositorySettings(visual=visual, limits=limits, **options)
        build_repository(checkpoint, out, settings, height, width, overwrite, engine)
    except (ValueError, KeyError, OutputExistsError) as exc:
        raise click.ClickException(str(exc)) from None
    served = f"{visual}, {options['visual_graph']}" if options["visual_graph"] else visual
    click.echo(f"wrote {out}: models " + ", ".join(f"{name} ({served})" if name == models.VISUAL else name
                                                   for name in models.MODELS))
    needed = limits.shared_memory_bytes(height, width, max(options["preprocess_instances"],
                                                           options["visual_instances"]))
    click.echo(f"shared memory for full batches ({limits.max_batch} x {limits.max_frames} frames of {height}x{width}): "
               f"{needed / 2**30:.1f} GiB; in a container, --shm-size={math.ceil(needed / 2**30)}g or more")


@click.command("serve")
@click.argument("repository", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--http-port", type=int, default=8000, show_default=True)
@click.option("--grpc-port", type=int, default=8001, show_default=True)
@click.option("--metrics-port", type=int, default=8002, show_default=True)
def serve(repository: Path, host: str, http_port: int, grpc_port: int, metrics_port: int) -> None:
    """Run tritonserver on REPOSITORY until Ctrl-C, forwarding its log."""
    import contextlib
    import sys

    from qslr.deploy.serving.server import Ports, TritonServer
    from qslr.deploy.serving.supervision import exit_on_signals, watch

    server = TritonServer(repository.resolve(), Ports(http_port, grpc_port, metrics_port), host, log_to=sys.stderr)
    # A service manager's SIGTERM and a closed terminal's SIGHUP stop the server as Ctrl-C does. Serving begins
    # with its line: a signal from there on ends the service (status 0), also one that comes before the watch does,
    # and the server's `with` stops it; a signal while it starts still aborts (status 1).
    with exit_on_signals(), server, contextlib.suppress(KeyboardInterrupt):
        click.echo(f"serving {repository} on http://{server.http_url} and grpc://{server.grpc_url} (Ctrl-C stops)",
                   err=True)
        watch(server)


@click.command("infer")
@click.argument("videos", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--url", default="127.0.0.1:8000", show_default=True, help="HTTP (or, with --grpc, gRPC) address.")
@click.option("--grpc", is_flag=True)
@click.option("--beam-size", type=int, default=None, help="Beam width for these requests (0: greedy).")
@click.option("--top-k", type=int, default=None, help="Also the K best distinct gloss sequences, with scores.")
@click.option("--serve", "repository", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Start a server on REPOSITORY (free local ports) for these videos, and stop it afterwards.")
@click.option("--json", "as_json", is_flag=True)
@with_framing_options
def infer(videos: tuple[Path, ...], url: str, grpc: bool, beam_size: int | None, top_k: int | None,
          repository: Path | None, as_json: bool, framing: str | None, region: str | None) -> None:
    """Recognise VIDEOS through a server; prints the glosses of each with their time spans and what was done to
    bring it to the model (rotation, frame rate, crop)."""
    options = chosen_framing(framing, region)
    if repository is None:
        _recognise(videos, url, grpc, beam_size, top_k, as_json, options)
        return
    from qslr.deploy.serving.server import Ports, TritonServer, free_port
    from qslr.deploy.serving.supervision import exit_on_signals

    with exit_on_signals(), TritonServer(repository.resolve(), Ports(free_port(), free_port(), free_port())) as server:
        click.echo(f"tritonserver ready on {server.http_url}", err=True)
        _recognise(videos, server.grpc_url if grpc else server.http_url, grpc, beam_size, top_k, as_json, options)


def _recognise(videos: tuple[Path, ...], url: str, grpc: bool, beam_size: int | None, top_k: int | None,
               as_json: bool, framing) -> None:
    from qslr.deploy.frontends.recognise_cli import as_json as json_record
    from qslr.deploy.frontends.recognise_cli import as_text
    from qslr.deploy.serving.client import CslrClient, RecognitionError

    client = CslrClient(url, grpc)
    failures = 0
    try:
        for video in videos:
            try:
                result = client.recognise_file(video, beam_size, top_k=top_k, framing=framing)
            except (RecognitionError, OSError) as exc:
                failures += 1
                click.echo(f"{video}: error: {exc}", err=True)
                continue
            # The same output as `qslr recognise`, so that tools read a local and a served answer alike.
            click.echo(json.dumps(json_record(video, result, None)) if as_json else as_text(video, result, None))
    finally:
        client.close()
    if failures:
        raise SystemExit(1)
