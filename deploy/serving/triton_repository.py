"""`qslr triton build`: a versioned Triton model repository from a checkpoint and the sources in triton_repo/.

Every template value comes from the checkpoint, its export and the options below; templates use strict
``${name}`` substitution, so a value the builder does not provide is an error, not a silent blank. The
repository is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from string import Template

import onnx

from qslr.deploy import model_names as models
from qslr.deploy import tensor_names as names
from qslr.deploy.decoder_choices import DALI, GPU_SUFFIX, PYAV
from qslr.deploy.export.nvidia_stack import TENSORRT_VERSION, TRITON_CONTAINER
from qslr.deploy.export.onnx_export import ExportInfo, export_onnx, graph_metadata, graph_precision, read_metadata
from qslr.deploy.export.tensorrt_engine import check_engine, read_engine_record
from qslr.deploy.served_limits import ServedLimits
from qslr.deploy.serving.buffered import WindowPlan
from qslr.deploy.serving.repository_checks import config_problems, read_config
from qslr.deploy.serving.repository_choices import VIDEO_DECODERS, VISUAL_BACKENDS
from qslr.deploy.serving.served_decoding import MAX_BEAM_SIZE, MAX_TOP_K, DecoderSettings, ServedDecoder
from qslr.model.checkpoints import InputSpec
from qslr.pipelines.atomic_output import atomic_directory
from qslr.pipelines.package_data import package_folder
from qslr.pipelines.source_framing import SourceFraming
from qslr.pipelines.temporal_padding import stride
from qslr.train.checkpointing import load_trained

SOURCES = package_folder("qslr.triton_repo")
# How a model's config declares each tensor of a recognition (tensor_names.RECOGNITION).
_RECOGNITION_TYPES = {names.GLOSSES: "TYPE_STRING dims: [ -1 ]", names.GLOSS_STEPS: "TYPE_INT64 dims: [ -1 ]",
                      names.GLOSS_START_S: "TYPE_FP32 dims: [ -1 ]", names.GLOSS_END_S: "TYPE_FP32 dims: [ -1 ]",
                      names.SCORE: "TYPE_FP32 dims: [ 1 ]", names.ALTERNATIVES: "TYPE_STRING dims: [ -1 ]",
                      names.ALTERNATIVE_SCORES: "TYPE_FP32 dims: [ -1 ]", names.FRAMING: "TYPE_STRING dims: [ 1 ]"}


class RepositoryCheckError(ValueError):
    """A generated model config that Triton would refuse over the exported graph."""


@dataclass(frozen=True)
class RepositorySettings:
    visual: str = "onnxruntime"
    limits: ServedLimits = field(default_factory=ServedLimits)
    dynamic_batching: bool = True
    # No waiting: a busy model instance batches what queued meanwhile; a delay only made each stage wait
    # for a full batch that a light load never fills (measured in docs/benchmarks.md).
    max_queue_delay_us: int = 0
    visual_instances: int = 1
    visual_threads: int = 2
    visual_max_padding: float = 0.1  # python visual model: padding a batched call may add (deploy/ragged_batch.py)
    preprocess_instances: int = 1
    video_decoder: str | None = None  # one of VIDEO_DECODERS; None: dali where DALI is installed, else pyav
    preprocess_threads: int = 2
    decoder_instances: int = 1
    # The visual model's own batch limit, below the served one where one engine context at the served batch
    # would not fit the GPU (docs/serving_gpu.md); None: the served maximum, or a TensorRT engine's profile batch
    # where that is smaller (`qslr export tensorrt` lowers it to what TensorRT can hold). The ensembles take the
    # smaller.
    visual_max_batch: int | None = None
    beam_size: int | None = None  # None: the checkpoint's decode settings (0 for greedy), as `qslr eval run` uses
    max_beam_size: int = MAX_BEAM_SIZE
    beam_size_token: int | None = None
    max_top_k: int = MAX_TOP_K  # at most the widest beam
    # `cslr`, which takes whole videos: windows for videos longer than one (None: the checkpoint's decode
    # settings), how many windows go to the visual model at once, and how many videos it works on at once.
    window_frames: int | None = None
    context_frames: int | None = None
    window_batch: int | None = None  # None: 4, or the visual model's batch limit if smaller
    cslr_instances: int = 2
    # A graph from `qslr export onnx` of this checkpoint (an INT8 or FP16 one, say) served by the onnxruntime
    # visual model instead of a float32 export made here.
    visual_graph: Path | None = None


def _dynamic_batching(settings: RepositorySettings) -> str:
    if not settings.dynamic_batching:
        return ""
    return f"dynamic_batching {{ max_queue_delay_microseconds: {settings.max_queue_delay_us} }}"


def _decoding(settings: RepositorySettings, metadata: dict[str, str], frames_per_step: int, checkpoint: Path
              ) -> dict[str, object]:
    """The served decoder's parameters: the training config's decode section unless overridden, so that the
    server answers what `qslr eval run` scores (its beam search backend included), and the checkpoint's frame
    rate for videos that state none. A decoder the server could not build is refused here."""
    decode = json.loads(metadata["qslr_config"]).get("decode", {})
    fps = json.loads(metadata.get("qslr_input", "{}")).get("fps")
    decoding = DecoderSettings.for_model(decode, frames_per_step, fps, settings.beam_size, settings.max_beam_size,
                                         settings.beam_size_token, settings.max_top_k)
    try:
        ServedDecoder(json.loads(metadata["qslr_vocab"]), decoding)  # what `ctc_decoder` builds at load
    except ImportError as exc:
        raise ValueError(f"{checkpoint}: decode.backend={decoding.backend} cannot be served here: {exc}") from None
    return asdict(decoding)


def _framing(metadata: dict[str, str], height: int, width: int) -> dict[str, object]:
    """How the checkpoint's training frames were made, for the models that frame uploads (`preprocess`, `cslr`);
    a graph exported before the input section said so takes the frame size's aspect."""
    spec = json.loads(metadata.get("qslr_input", "{}"))
    source = InputSpec.from_dict(spec).source_framing(height, width) if spec else SourceFraming.of_size(width, height)
    return {"source_aspect": repr(source.aspect), "framing_rule": source.rule}


def _windows(settings: RepositorySettings, metadata: dict[str, str], frames_per_step: int, visual_batch: int
             ) -> dict[str, object]:
    decode = json.loads(metadata["qslr_config"]).get("decode", {})
    plan = WindowPlan.for_model(decode, frames_per_step, settings.window_frames, settings.context_frames)
    longest = settings.limits.max_frames - settings.limits.max_frames % frames_per_step
    if settings.window_frames is None and plan.window > longest:  # the checkpoint's window, cut to the limits
        plan = WindowPlan(longest, plan.context, frames_per_step)
    plan.check_fits(settings.limits.max_frames)
    window_batch = min(4, visual_batch) if settings.window_batch is None else settings.window_batch
    if not 1 <= window_batch <= visual_batch:
        raise ValueError(f"the windows run at once must be 1..{visual_batch} (the visual model's batch limit), "
                         f"got {window_batch}")
    return {"window_frames": plan.window, "context_frames": plan.context, "window_batch": window_batch,
            "max_seconds": settings.limits.max_seconds}


def resolve_video_decoder(requested: str | None) -> str:
    """The decoder a repository will use: the one asked for, else DALI's (measured fastest on the CPU,
    docs/benchmarks.md) where DALI is installed, else PyAV."""
    if requested is not None:
        if requested not in VIDEO_DECODERS:
            raise ValueError(f"unknown video decoder {requested!r} (known: {', '.join(VIDEO_DECODERS)})")
        if requested.startswith(DALI) and importlib.util.find_spec("nvidia.dali") is None:
            raise ValueError(f"--decoder {requested} needs nvidia-dali (pip install -e '.[dali]'), which is not "
                             "installed; --decoder pyav works without it")
        return requested
    return DALI if importlib.util.find_spec("nvidia.dali") is not None else PYAV


def _preprocess(settings: RepositorySettings) -> dict[str, object]:
    decoder = resolve_video_decoder(settings.video_decoder)
    gpu = decoder.endswith(GPU_SUFFIX)
    return {"decoder_choice": decoder, "video_decoder": decoder.removesuffix(GPU_SUFFIX),
            "decoder_device": "gpu" if gpu else "cpu", "preprocess_kind": "KIND_GPU" if gpu else "KIND_CPU"}


def _names(model: str) -> dict[str, str]:
    """The names a model's config template spells through placeholders: its own, those of the models an ensemble
    calls, and the tensors of a recognition (its outputs, and an ensemble's map of them from ctc_decoder)."""
    return {"model_name": model, "preprocess_model": models.PREPROCESS, "visual_model": models.VISUAL,
            "ctc_decoder_model": models.CTC_DECODER,
            "recognition_outputs": _outputs(names.RECOGNITION),
            "video_recognition_outputs": _outputs(names.VIDEO_RECOGNITION),
            "recognition_output_map": "\n".join(f'      output_map {{ key: "{name}" value: "{name}" }}'
                                                for name in names.RECOGNITION)}


def _outputs(tensors: tuple[str, ...]) -> str:
    return ",\n".join(f'  {{ name: "{name}" data_type: {_RECOGNITION_TYPES[name]} }}' for name in tensors)


def render(template: Path, values: dict[str, object]) -> str:
    try:
        return Template(template.read_text()).substitute({k: str(v) for k, v in values.items()})
    except KeyError as exc:
        raise KeyError(f"{template}: no value for ${{{exc.args[0]}}}") from None


def build_repository(checkpoint: str | Path, out: str | Path, settings: RepositorySettings, height: int, width: int,
                     overwrite: bool = False, engine: str | Path | None = None) -> Path:
    """Export the checkpoint and lay out every model; ``engine`` is a TensorRT plan for --visual tensorrt."""
    if settings.visual not in VISUAL_BACKENDS:
        raise ValueError(f"unknown visual backend {settings.visual!r} (known: {', '.join(VISUAL_BACKENDS)})")
    if settings.visual == "tensorrt" and engine is None:
        raise ValueError("--visual tensorrt needs an engine built by `qslr export tensorrt` (--engine)")
    if settings.visual != "tensorrt" and engine is not None:
        raise ValueError("an engine (--engine) is served only with --visual tensorrt")
    if settings.visual_graph is not None and settings.visual != "onnxruntime":
        raise ValueError("a graph (--onnx) is served only with --visual onnxruntime; a TensorRT engine is built from "
                         "it with `qslr export tensorrt`")
    # Refused before the export: an engine this repository's Triton could not load, or that could not run
    # every clip the limits admit.
    visual_batch = settings.visual_max_batch or settings.limits.max_batch
    if settings.visual_max_batch is None and engine is not None:
        visual_batch = min(visual_batch, read_engine_record(engine).profile.max_batch)
    if not 1 <= visual_batch <= settings.limits.max_batch:
        raise ValueError(f"the visual model's batch limit must be 1..{settings.limits.max_batch} (the served "
                         f"maximum), got {visual_batch}")
    visual_limits = dataclasses.replace(settings.limits, max_batch=visual_batch)
    record = check_engine(engine, visual_limits, height, width) if engine is not None else None
    out = Path(out)
    with atomic_directory(out, overwrite) as root:
        onnx_path = root / models.VISUAL / "1" / "model.onnx"
        onnx_path.parent.mkdir(parents=True)
        if settings.visual_graph is not None:
            info = adopt_graph(settings.visual_graph, onnx_path, checkpoint, height, width)
        else:
            info = export_onnx(checkpoint, onnx_path, height, width)
        graph = onnx.load(str(onnx_path), load_external_data=False)
        metadata = graph_metadata(graph)
        limits = settings.limits
        values = {**vars(settings), **_preprocess(settings), "limits": None,
                  "visual_graph": str(settings.visual_graph) if settings.visual_graph else None,
                  "visual_precision": record.precision if record else info.precision,
                  "dynamic_batching": _dynamic_batching(settings),
                  "height": info.height, "width": info.width, "num_classes": info.num_classes,
                  # The ensembles take the visual model's too: Triton refuses an ensemble allowing a larger batch
                  # than a model inside it.
                  "max_batch_size": limits.max_batch, "visual_max_batch_size": visual_batch,
                  "min_frames": limits.min_frames,
                  "max_frames": limits.max_frames,
                  # frames_per_step: what a client needs to put the glosses' output steps back on the video.
                  **_decoding(settings, metadata, stride(info.kernels), Path(checkpoint)),
                  **_framing(metadata, info.height, info.width),
                  **_windows(settings, metadata, stride(info.kernels), visual_batch)}
        for name in models.MODELS:
            folder = root / name
            (folder / "1").mkdir(parents=True, exist_ok=True)
            template = SOURCES / name / "config.pbtxt.template"
            if name == models.VISUAL and settings.visual == "tensorrt":
                template = SOURCES / name / "config.tensorrt.pbtxt.template"
                shutil.copyfile(engine, folder / "1" / "model.plan")
            (folder / "config.pbtxt").write_text(render(template, {**values, **_names(name)}))
            if name == models.VISUAL:
                # The engine was built from this same export: its config must describe that graph.
                problems = config_problems(read_config(folder / "config.pbtxt"), graph)
                if problems:
                    raise RepositoryCheckError(f"{template.name}: " + "; ".join(problems))
            source_model = SOURCES / name / "1" / "model.py"
            if source_model.exists() and not (name == models.VISUAL and settings.visual == "tensorrt"):
                shutil.copyfile(source_model, folder / "1" / "model.py")
        if settings.visual == "tensorrt":
            onnx_path.unlink()
        (root / models.CTC_DECODER / "1" / "vocab.json").write_text(metadata["qslr_vocab"])
        (root / "qslr-repository.json").write_text(json.dumps(
            {"checkpoint": str(Path(checkpoint).resolve()), "settings": {**values, "limits": asdict(limits)},
             "crop_size": info.crop_size,
             "tensorrt": {"engine_version": record.tensorrt_version, "target_version": TENSORRT_VERSION,
                          "triton_container": TRITON_CONTAINER} if record else None}, indent=1) + "\n")
        (root / "README.md").write_text(_readme(Path(checkpoint), settings, values))
    return out


def adopt_graph(graph_path: str | Path, out: Path, checkpoint: str | Path, height: int, width: int) -> ExportInfo:
    """Copy a graph exported from ``checkpoint`` to ``out``, refusing one of another model or frame size."""
    graph_path = Path(graph_path)
    metadata = read_metadata(graph_path)
    if "qslr_vocab" not in metadata or "qslr_input" not in metadata:
        raise ValueError(f"{graph_path}: not a graph from `qslr export onnx` (it holds no QSLR vocabulary and input)")
    trained = load_trained(checkpoint)
    if json.loads(metadata["qslr_vocab"]) != trained.vocab or json.loads(metadata["qslr_input"]) != json.loads(
            json.dumps(asdict(trained.input))):
        raise ValueError(f"{graph_path}: was not exported from {checkpoint} (another vocabulary or input contract)")
    if (int(metadata["qslr_height"]), int(metadata["qslr_width"])) != (height, width):
        raise ValueError(f"{graph_path}: takes {metadata['qslr_height']}x{metadata['qslr_width']} frames, the "
                         f"repository {height}x{width}")
    if int(metadata.get("qslr_top_k", "0")):
        raise ValueError(f"{graph_path}: has top-k outputs, which the served visual model does not take")
    shutil.copyfile(graph_path, out)
    return ExportInfo(out, height, width, int(metadata["qslr_crop_size"]), int(metadata["qslr_num_classes"]), None,
                      tuple(json.loads(metadata["qslr_input"])["kernels"]), graph_precision(metadata))


_DECODER_NOTES = {
    "dali": "DALI's CPU video decoder, the training loader's; VP8, VP9 and MJPEG, other codecs (H.264, ...) "
            "through PyAV",
    "dali-gpu": "DALI with NVDEC on the GPU (an instance of kind KIND_GPU); codecs NVDEC lacks through PyAV. "
                "Not yet run on a GPU by the project",
    "pyav": "FFmpeg through PyAV, every codec FFmpeg reads",
}


def _readme(checkpoint: Path, settings: RepositorySettings, values: dict) -> str:
    decoder = values["decoder_choice"]
    limits = settings.limits
    batching = f"on, {settings.max_queue_delay_us} us queue delay" if settings.dynamic_batching else "off"
    return "\n".join([
        "# QSLR Triton model repository",
        "",
        f"Built by `qslr triton build` from `{checkpoint.name}`.",
        "",
        "| setting | value |",
        "|---|---|",
        f"| video decoder (`preprocess`) | `{decoder}`: {_DECODER_NOTES[decoder]}; "
        f"{values['preprocess_threads']} videos at a time per instance |",
        f"| visual model | `{settings.visual}` ({values['visual_precision']}), input {values['height']}x"
        f"{values['width']} uint8 frames |",
        f"| served limits | {limits.min_frames} to {limits.max_frames} frames per clip, {limits.max_batch} clips "
        f"per batch ({values['visual_max_batch_size']} in the visual model) |",
        f"| whole videos (`cslr`) | up to {limits.max_seconds:g} s; longer than {values['window_frames']} frames in "
        f"windows of {values['window_frames']} frames with {values['context_frames']} frames of context on each "
        f"side, {values['window_batch']} windows at a time |",
        f"| dynamic batching | {batching} |",
        f"| default decoding | {'greedy' if int(values['beam_size']) == 0 else 'beam ' + str(values['beam_size'])}, "
        f"beam widths up to {values['max_beam_size']} per request |",
        "",
        "Every value is also in `qslr-repository.json`; serve with `qslr serve <this folder>`.",
        "",
    ])
