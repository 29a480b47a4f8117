"""`qslr triton build`: a versioned Triton model repository from a checkpoint and the sources in triton_repo/.

Every template value comes from the checkpoint, its export and the options below; templates use strict
``${name}`` substitution, so a value the builder does not provide is an error, not a silent blank. The
repository is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from string import Template

import onnx

from deploy.nvidia_stack import TENSORRT_VERSION, TRITON_CONTAINER
from deploy.onnx_export import export_onnx, graph_metadata
from deploy.repository_checks import config_problems, read_config
from deploy.served_limits import ServedLimits
from deploy.tensorrt_engine import check_engine
from pipelines.atomic_output import atomic_directory
from pipelines.temporal_padding import stride

SOURCES = Path(__file__).resolve().parents[1] / "triton_repo"
MODELS = ("preprocess", "visual", "ctc_decoder", "cslr", "cslr_frames")
VISUAL_BACKENDS = ("onnxruntime", "tensorrt")


class RepositoryCheckError(ValueError):
    """A generated model config that Triton would refuse over the exported graph."""


@dataclass(frozen=True)
class RepositorySettings:
    visual: str = "onnxruntime"
    limits: ServedLimits = field(default_factory=ServedLimits)
    dynamic_batching: bool = True
    max_queue_delay_us: int = 5000
    visual_instances: int = 1
    visual_threads: int = 2
    preprocess_instances: int = 1
    decoder_instances: int = 1
    beam_size: int | None = None  # None: the checkpoint's decode settings (0 for greedy), as `qslr eval run` uses
    max_beam_size: int = 10
    beam_size_token: int | None = None


def _dynamic_batching(settings: RepositorySettings) -> str:
    if not settings.dynamic_batching:
        return ""
    return f"dynamic_batching {{ max_queue_delay_microseconds: {settings.max_queue_delay_us} }}"


def _decoding(settings: RepositorySettings, trained: dict) -> dict[str, int]:
    """The served decoder's defaults: the training config's decode section unless overridden, so that the
    server answers what `qslr eval run` scores."""
    beam = settings.beam_size
    if beam is None:
        beam = 0 if trained.get("method") == "greedy" else int(trained.get("beam_size", 10))
    token = settings.beam_size_token or int(trained.get("beam_size_token", 40))
    return {"beam_size": beam, "beam_size_token": token, "max_beam_size": max(settings.max_beam_size, beam)}


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
    # Refused before the export: an engine this repository's Triton could not load, or that could not run
    # every clip the limits admit.
    record = check_engine(engine, settings.limits, height, width) if engine is not None else None
    out = Path(out)
    with atomic_directory(out, overwrite) as root:
        onnx_path = root / "visual" / "1" / "model.onnx"
        onnx_path.parent.mkdir(parents=True)
        info = export_onnx(checkpoint, onnx_path, height, width)
        graph = onnx.load(str(onnx_path), load_external_data=False)
        metadata = graph_metadata(graph)
        limits = settings.limits
        values = {**vars(settings), "limits": None, "dynamic_batching": _dynamic_batching(settings),
                  "height": info.height, "width": info.width, "num_classes": info.num_classes,
                  "max_batch_size": limits.max_batch, "min_frames": limits.min_frames,
                  "max_frames": limits.max_frames,
                  **_decoding(settings, json.loads(metadata["qslr_config"]).get("decode", {})),
                  # What a client needs to put the glosses' output steps back on the video's frames.
                  "frames_per_step": stride(info.kernels)}
        for name in MODELS:
            folder = root / name
            (folder / "1").mkdir(parents=True, exist_ok=True)
            template = SOURCES / name / "config.pbtxt.template"
            if name == "visual" and settings.visual == "tensorrt":
                template = SOURCES / name / "config.tensorrt.pbtxt.template"
                shutil.copyfile(engine, folder / "1" / "model.plan")
            (folder / "config.pbtxt").write_text(render(template, values))
            if name == "visual":
                # The engine was built from this same export: its config must describe that graph.
                problems = config_problems(read_config(folder / "config.pbtxt"), graph)
                if problems:
                    raise RepositoryCheckError(f"{template.name}: " + "; ".join(problems))
            source_model = SOURCES / name / "1" / "model.py"
            if source_model.exists() and not (name == "visual" and settings.visual == "tensorrt"):
                shutil.copyfile(source_model, folder / "1" / "model.py")
        if settings.visual == "tensorrt":
            onnx_path.unlink()
        (root / "ctc_decoder" / "1" / "vocab.json").write_text(metadata["qslr_vocab"])
        (root / "qslr-repository.json").write_text(json.dumps(
            {"checkpoint": str(Path(checkpoint).resolve()), "settings": {**values, "limits": asdict(limits)},
             "crop_size": info.crop_size,
             "tensorrt": {"engine_version": record.tensorrt_version, "target_version": TENSORRT_VERSION,
                          "triton_container": TRITON_CONTAINER} if record else None}, indent=1) + "\n")
    return out
