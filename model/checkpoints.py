"""QSLR checkpoint files: the network's weights with everything needed to rebuild and use it.

    {"format": "qslr", "version": 4, "num_classes": C, "model_state_dict": ..., "vocab": {gloss: id} | None,
     "input": {height, width, crop_size, kernels, left_padding, total_padding, fps, pixel_offset,
               pixel_scale, source_aspect, framing_rule} | None,
     "config": {"model": {frame_encoder, temporal, sequence, classifier}, ...}, "training": dict | None}

The config is where the network's architecture is stated, once: its model section builds the network. A
checkpoint from training holds the whole experiment config; one converted from elsewhere (``qslr model
import-vac``) holds only the model section. The input section is the model's contract with whoever feeds it:
export, serving and the benchmarks take the frame size and everything else from it and never open a dataset;
it also says how the training frames were made from their source videos (pipelines/framing.py), so that every
front end brings any video to them. Older files are migrated on loading (``migrate``): version 1 had no input
section, version 2 held the model sections a second time beside the config, version 3 did not say how the frames
were made.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qslr.model.network import SLRModel, build_model
from qslr.pipelines.atomic_output import atomic_path
from qslr.pipelines.augmentation import PIXEL_OFFSET, PIXEL_SCALE
from qslr.pipelines.source_framing import RESIZE, SourceFraming
from qslr.pipelines.temporal_padding import VAC_KERNELS, padding_for

FORMAT, VERSION = "qslr", 4
# The model section's parts, each the keyword arguments of its builder (build_model).
MODEL_SECTIONS = ("frame_encoder", "temporal", "sequence", "classifier")


@dataclass(frozen=True)
class InputSpec:
    """What the network expects of its input: frames of height x width, a centre (or random) crop of
    crop_size, pixels mapped by (value - pixel_offset) / pixel_scale, clips padded for the temporal kernels; and
    how its training frames were made from their source videos: a picture of ``source_aspect`` (width / height)
    brought to height x width by ``framing_rule`` (pipelines/framing.py's RULES)."""

    height: int | None  # None: unknown (a migrated checkpoint whose training data is not at hand)
    width: int | None
    crop_size: int
    kernels: tuple[str, ...]
    left_padding: int
    total_padding: int
    fps: float | None
    pixel_offset: float = PIXEL_OFFSET
    pixel_scale: float = PIXEL_SCALE
    source_aspect: float | None = None  # None: unknown, with the frame size
    framing_rule: str = RESIZE

    @classmethod
    def from_dict(cls, data: dict) -> InputSpec:
        return cls(**{**data, "kernels": tuple(data["kernels"])})

    def source_framing(self, height: int, width: int) -> SourceFraming:
        """How the training frames were made; for a checkpoint that does not know its source's aspect, a picture
        of the frame size asked for (``height`` x ``width``)."""
        return SourceFraming(self.source_aspect or width / height, self.framing_rule)


class CheckpointError(ValueError):
    """A checkpoint file is unreadable or does not fit; the message names the file and the keys."""


def _numpy_globals() -> list:
    # Original VAC checkpoints pickle numpy RNG states next to the weights.
    types = [np.ndarray, np.dtype, np.core.multiarray._reconstruct]
    types += [getattr(np.dtypes, name) for name in ("UInt32DType", "Float64DType", "Int64DType")
              if hasattr(np, "dtypes") and hasattr(np.dtypes, name)]
    return types


def load_file(path: str | Path, trust: bool = False) -> dict[str, Any]:
    """torch.load restricted to tensors, containers and numpy arrays unless ``trust`` is set."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        if trust:
            data = torch.load(path, map_location="cpu", weights_only=False)
        else:
            with torch.serialization.safe_globals(_numpy_globals()):
                data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure becomes one clear message
        # PyTorch's weights-only refusal is many lines long; the line worth showing names what it refused.
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
        detail = next((line[line.index("Unsupported"):] for line in lines if "Unsupported" in line), lines[0])
        if not trust and "Unsupported global" in detail:
            raise CheckpointError(f"{path}: the checkpoint holds Python objects other than tensors and arrays "
                                  f"({detail.split(' by default')[0]}); if you trust the file, "
                                  "`qslr model import-vac --trust` converts it") from None
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {detail[:160]})"
                              ) from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a dict, got {type(data).__name__}")
    return data


def save_file(path: str | Path, data: dict[str, Any]) -> None:
    """torch.save that never leaves half a checkpoint behind a crash."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        # Written through a Python file, so that a full disk is an OSError naming it (ENOSPC): given a path,
        # torch.save's own writer reports one as "unexpected pos N vs M".
        torch.save(data, handle)


@dataclass
class LoadedModel:
    model: SLRModel
    vocab: dict[str, int] | None
    input: InputSpec | None
    config: dict  # the whole training config, or only {"model": ...} for a converted checkpoint
    training: dict | None

    @property
    def model_sections(self) -> dict[str, dict]:
        return self.config["model"]


def _missing_sections(config: dict) -> list[str]:
    return [f"model.{name}" for name in MODEL_SECTIONS if name not in (config.get("model") or {})]


def checkpoint_dict(model: SLRModel, config: dict, vocab: dict[str, int] | None, input_spec: InputSpec | None = None,
                    training: dict | None = None) -> dict[str, Any]:
    """``config`` holds at least the model section the network was built from (``{"model": sections}``)."""
    missing = _missing_sections(config)
    if missing:
        raise ValueError(f"a checkpoint's config must state the network: it has no {', '.join(missing)}")
    return {"format": FORMAT, "version": VERSION, "num_classes": model.num_classes,
            "model_state_dict": model.state_dict(), "vocab": vocab,
            "input": asdict(input_spec) if input_spec else None, "config": config, "training": training}


def save_checkpoint(path: str | Path, model: SLRModel, config: dict, vocab: dict[str, int] | None,
                    input_spec: InputSpec | None = None, training: dict | None = None) -> None:
    save_file(path, checkpoint_dict(model, config, vocab, input_spec, training))


def input_spec_for(kernels: tuple[str, ...] | list[str], crop_size: int, height: int | None, width: int | None,
                   fps: float | None, source: SourceFraming | None = None) -> InputSpec:
    """``source``: how the frames were made (None: pictures of the frame size, resized, as migrated checkpoints
    are taken to be)."""
    left, total = padding_for(kernels)
    if source is None:
        source = SourceFraming(width / height, RESIZE) if height and width else None
    return InputSpec(height, width, crop_size, tuple(kernels), left, total, fps,
                     source_aspect=source.aspect if source else None,
                     framing_rule=source.rule if source else RESIZE)


def migrate(data: dict[str, Any], frame_source: Callable[[str], tuple[int, int, float] | None] = lambda root: None
            ) -> dict[str, Any]:
    """An older checkpoint in the current layout, one version step at a time.

    Version 1 to 2: the input section, derived from the config (crop size) and model sections (kernels), with
    the frame size and rate from ``frame_source(data root)``, which may know none. Version 2 to 3: the model
    sections, which the network was built from, become the config's model section (a converted checkpoint
    had no config: it gets one of that section alone). Version 3 to 4: how the training frames were made, which
    version 3 did not say; stated as pictures of the frame size's aspect, resized (so a Phoenix checkpoint of
    version 3 crops a phone video square, not to the 210:260 of Phoenix's pictures: retrain, or re-save it)."""
    if data.get("version") == 1:
        config = data.get("config") or {}
        input_spec = None
        if "crop_size" in config.get("data", {}):
            frames = frame_source(config["data"].get("root", "")) or (None, None, None)
            input_spec = asdict(input_spec_for(data["model_sections"]["temporal"].get("kernels", VAC_KERNELS),
                                               config["data"]["crop_size"], *frames))
        data = {**data, "version": 2, "input": input_spec}
    if data.get("version") == 2:
        rest = {key: value for key, value in data.items() if key != "model_sections"}
        data = {**rest, "version": 3, "config": {**(data.get("config") or {}), "model": data["model_sections"]}}
    if data.get("version") == 3:
        spec = data.get("input")
        if spec is not None:
            known = spec.get("height") and spec.get("width")
            spec = {**spec, "source_aspect": spec["width"] / spec["height"] if known else None,
                    "framing_rule": RESIZE}
        data = {**data, "version": 4, "input": spec}
    return data


def load_state_dict_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str,
                           display: Callable[[str], str] = lambda key: key) -> None:
    """load_state_dict(strict=True) whose error lists the missing, unexpected and mis-shaped keys,
    each shown as ``display`` names it."""
    expected = model.state_dict()
    missing = sorted(display(k) for k in set(expected) - set(state))
    unexpected = sorted(display(k) for k in set(state) - set(expected))
    misshaped = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or misshaped:
        def listing(keys: list[str]) -> str:
            return ", ".join(keys[:8]) + (f" (+{len(keys) - 8} more)" if len(keys) > 8 else "")

        parts = []
        if missing:
            parts.append(f"missing {listing(missing)}")
        if unexpected:
            parts.append(f"unexpected {listing(unexpected)}")
        parts += [f"{display(k)} has shape {tuple(state[k].shape)}, the model wants {tuple(expected[k].shape)}"
                  for k in misshaped[:8]]
        raise CheckpointError(f"{source}: weights do not fit the model: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def load_checkpoint(path: str | Path,
                    frame_source: Callable[[str], tuple[int, int, float] | None] = lambda root: None) -> LoadedModel:
    """``frame_source`` tells an old checkpoint's frame size and rate from its data root (see ``migrate``)."""
    data = load_file(path)
    if data.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a QSLR checkpoint (for the original VAC code's files use "
                              f"`qslr model import-vac`)")
    data = migrate(data, frame_source)
    if data.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {data.get('version')} is not supported (want {VERSION})")
    config = data.get("config") or {}
    missing = _missing_sections(config)
    if missing:
        raise CheckpointError(f"{path}: its config has no {', '.join(missing)} to build the network from")
    # The weights come from the file: never fetch pretrained ones to build the skeleton.
    skeleton = {name: config["model"][name] for name in MODEL_SECTIONS}
    skeleton["frame_encoder"] = {**skeleton["frame_encoder"], "weights": None}
    model = build_model(data["num_classes"], **skeleton)
    load_state_dict_strict(model, data["model_state_dict"], str(path))
    spec = InputSpec.from_dict(data["input"]) if data.get("input") else None
    return LoadedModel(model, data.get("vocab"), spec, config, data.get("training"))
