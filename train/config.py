"""The experiment config: typed sections, YAML presets in ``configs/``, dotted ``key=value`` overrides.

Priority is command line > YAML (a preset may ``extends:`` another) > the dataclass defaults below,
which are the only place defaults live. Every key is checked: an unknown one is an error that names
the closest valid keys, and every value must have its field's type.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
LOSS_TERMS = ("SeqCTC", "ConvCTC", "Dist")


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key and the source."""


def _choice(default: Any, *choices: Any) -> Any:
    return field(default=default, metadata={"choices": choices})


def _at_least(default: Any, minimum: float) -> Any:
    return field(default=default, metadata={"minimum": minimum})


@dataclass
class DataConfig:
    root: str = "data/phoenix2014"  # a prepared dataset (see pipelines/prepared.py)
    train_split: str = "train"
    dev_split: str = "dev"
    test_split: str = "test"
    loader: str = _choice("dali", "dali", "reference")
    batch_size: int = _at_least(2, 1)
    eval_batch_size: int = _at_least(8, 1)
    num_workers: int = _at_least(4, 0)
    crop_size: int = _at_least(224, 1)  # random crop in training, centre crop otherwise
    flip_prob: float = 0.5
    temporal_rescale: float = 0.2  # training clips are resampled to L * U(1 - r, 1 + r) frames
    min_frames: int = _at_least(32, 1)
    max_frames: int = _at_least(230, 1)


@dataclass
class FrameEncoderConfig:
    arch: str = "resnet18"
    weights: str | None = "IMAGENET1K_V1"  # a weights enum name, a file, or null for random init
    options: dict[str, Any] = field(default_factory=dict)  # extra builder arguments of the arch


@dataclass
class TemporalConvConfig:
    kernels: list[str] = field(default_factory=lambda: ["K5", "P2", "K5", "P2"])
    hidden_size: int = _at_least(1024, 1)


@dataclass
class SequenceModelConfig:
    hidden_size: int = _at_least(1024, 2)  # both directions together
    num_layers: int = _at_least(2, 1)
    dropout: float = 0.3


@dataclass
class ClassifierConfig:
    weight_norm: bool = False  # SMKD's weight-normalised classifier
    shared: bool = False  # SMKD: one classifier for the conv and sequence branches


@dataclass
class ModelConfig:
    frame_encoder: FrameEncoderConfig = field(default_factory=FrameEncoderConfig)
    temporal: TemporalConvConfig = field(default_factory=TemporalConvConfig)
    sequence: SequenceModelConfig = field(default_factory=SequenceModelConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)


@dataclass
class LossConfig:
    weights: dict[str, float] = field(default_factory=lambda: {"SeqCTC": 1.0}, metadata={"keys": LOSS_TERMS})
    temperature: float = 8.0  # of the Dist (visual alignment) term


@dataclass
class OptimizerConfig:
    name: str = _choice("adam", "adam", "adamw", "sgd")
    lr: float = 1.0e-4
    weight_decay: float = 1.0e-4
    milestones: list[int] = field(default_factory=lambda: [20, 35])  # epochs where lr is multiplied by gamma
    gamma: float = 0.2
    # The original's SyncBN conversion ran after the optimizer was built, leaving BatchNorm's affine
    # parameters untouched by training (docs/original_vac.md); true reproduces that.
    freeze_bn_affine: bool = False


@dataclass
class TrainConfig:
    epochs: int = _at_least(40, 1)
    max_steps: int | None = None  # stop after this many optimiser steps (budgets the demo in steps)
    seed: int = 0
    work_dir: str = "runs/default"
    device: str = _choice("auto", "auto", "cpu", "cuda")
    amp: str = _choice("bf16", "none", "bf16", "fp16")  # used on GPUs only
    grad_accumulation: int = _at_least(1, 1)
    grad_clip: float | None = None
    eval_interval: int = _at_least(1, 1)
    save_interval: int = _at_least(5, 1)
    log_interval: int = _at_least(50, 1)


@dataclass
class DecodeConfig:
    method: str = _choice("beam", "beam", "greedy")
    backend: str = _choice("flashlight", "flashlight", "ctcdecode")
    beam_size: int = _at_least(10, 1)
    beam_size_token: int = _at_least(40, 1)  # tokens expanded per frame (ctcdecode's cutoff_top_n)


@dataclass
class EvalConfig:
    scorer: str = _choice("python", "python", "sclite")
    normalisation: str = _choice("phoenix2014", "phoenix2014", "none")


@dataclass
class ExperimentConfig:
    name: str = "default"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimizerConfig = field(default_factory=OptimizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# --- building typed sections from plain dicts ---------------------------------------------------


def valid_keys(cls: type = ExperimentConfig, prefix: str = "") -> list[str]:
    """Every dotted key of ``cls``: sections and leaves."""
    keys = []
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        key = prefix + f.name
        keys.append(key)
        if is_dataclass(hints[f.name]):
            keys.extend(valid_keys(hints[f.name], key + "."))
    return keys


def _unknown_key_error(key: str, cls: type, prefix: str, source: str) -> ConfigError:
    candidates = valid_keys(ExperimentConfig)
    close = difflib.get_close_matches(key, candidates, n=3, cutoff=0.6)
    if not close:
        close = difflib.get_close_matches(key.rsplit(".", 1)[-1], [c.rsplit(".", 1)[-1] for c in candidates], n=3)
        close = [c for c in candidates if c.rsplit(".", 1)[-1] in close][:3]
    hint = (f"did you mean {', '.join(repr(c) for c in close)}?" if close
            else f"valid keys{' in ' + repr(prefix.rstrip('.')) if prefix else ''}: "
                 f"{', '.join(f.name for f in fields(cls))}")
    return ConfigError(f"unknown config key {key!r} ({source}); {hint}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(tp: Any, value: Any, key: str, meta: Mapping[str, Any], source: str) -> Any:
    def bad(expected: str) -> ConfigError:
        return ConfigError(f"config key {key!r} ({source}): expected {expected}, got {value!r}")

    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        (inner,) = [o for o in options if o is not type(None)]
        return _coerce(inner, value, key, meta, source)
    if is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise bad(f"a mapping for section {key!r}")
        return build(tp, value, source, key + ".")
    if tp is Any:
        result = value
    elif tp is bool:
        if not isinstance(value, bool):
            raise bad("true or false")
        result = value
    elif tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        result = value
    elif tp is float:
        # YAML 1.1 reads 1e-4 (no dot) as a string; accept any spelling float() accepts.
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise bad("a number") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        result = float(value)
    elif tp is str:
        if not isinstance(value, str):
            raise bad("a string")
        result = value
    elif origin is list:
        if not isinstance(value, list):
            raise bad(f"a list of {_type_name(typing.get_args(tp)[0])}")
        (item,) = typing.get_args(tp)
        result = [_coerce(item, v, f"{key}[{i}]", {}, source) for i, v in enumerate(value)]
    elif origin is dict:
        if not isinstance(value, Mapping):
            raise bad("a mapping")
        _, item = typing.get_args(tp)
        allowed = meta.get("keys")
        for k in value:
            if allowed is not None and k not in allowed:
                raise ConfigError(
                    f"config key '{key}.{k}' ({source}): unknown entry; valid entries: {', '.join(allowed)}"
                )
        result = {str(k): _coerce(item, v, f"{key}.{k}", {}, source) for k, v in value.items()}
    else:
        raise TypeError(f"config field {key!r} has an unsupported type {tp!r}")
    if "choices" in meta and result not in meta["choices"]:
        choices = ", ".join(map(str, meta["choices"]))
        raise ConfigError(f"config key {key!r} ({source}): {result!r} is not one of {choices}")
    if "minimum" in meta and result is not None and result < meta["minimum"]:
        raise ConfigError(f"config key {key!r} ({source}): {result!r} is below the minimum {meta['minimum']}")
    return result


def build(cls: type, data: Mapping[str, Any], source: str = "config", prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a nested mapping, rejecting unknown keys and wrong types."""
    hints = typing.get_type_hints(cls)
    by_name = {f.name: f for f in fields(cls)}
    for key in data:
        if key not in by_name:
            raise _unknown_key_error(prefix + str(key), cls, prefix, source)
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, prefix + name, by_name[name].metadata, source)
    missing = [f.name for f in fields(cls) if f.name not in kwargs
               and f.default is MISSING and f.default_factory is MISSING]
    if missing:
        raise ConfigError(f"{source}: missing required key(s) {', '.join(prefix + m for m in missing)}")
    return cls(**kwargs)


# --- YAML presets and overrides -------------------------------------------------------------------


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def resolve_preset(name_or_path: str | Path, relative_to: Path = CONFIG_DIR) -> Path:
    """A YAML path, or the name of a preset in ``configs/`` (``phoenix2014-vac``)."""
    candidate = Path(name_or_path)
    for path in (candidate, relative_to / candidate, relative_to / f"{candidate}.yaml"):
        if path.suffix in (".yaml", ".yml") and path.is_file():
            return path
    known = ", ".join(available_presets())
    raise ConfigError(f"config {str(name_or_path)!r}: no such file or preset (presets: {known})")


def available_presets() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def load_yaml(path: Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a preset, resolving ``extends:`` (relative to the file's folder) depth first."""
    path = path.resolve()
    if path in _chain:
        cycle = " -> ".join(p.name for p in (*_chain, path))
        raise ConfigError(f"{path}: 'extends' forms a cycle ({cycle})")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    parent = data.pop("extends", None)
    if parent is None:
        return data
    base = load_yaml(resolve_preset(parent, path.parent), (*_chain, path))
    return deep_merge(base, data)


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """``["optim.lr=1e-3", "loss.weights.Dist=25"]`` -> nested dict; values are parsed as YAML."""
    nested: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(p.strip() for p in parts):
            raise ConfigError(f"malformed override {item!r}: expected dotted.key=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            raise ConfigError(f"override {item!r}: value is not valid YAML") from None
        node = nested
        for part in parts[:-1]:
            child = node.setdefault(part.strip(), {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r} conflicts with an earlier override of {part!r}")
            node = child
        node[parts[-1].strip()] = value
    return nested


def load_config(preset: str | Path | None = None, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Defaults, then the preset's YAML, then the command-line overrides.

    Mapping-valued fields (loss weights, builder options) merge entry by entry at every level, so
    ``loss.weights.Dist=25`` adds a term and keeps the others.
    """
    data = ExperimentConfig().to_dict()
    if preset is not None:
        path = resolve_preset(preset)
        data["name"] = path.stem
        # Validate the YAML on its own first, so that its errors name the file.
        data = deep_merge(data, load_yaml(path))
        build(ExperimentConfig, data, str(path))
    return build(ExperimentConfig, deep_merge(data, parse_overrides(overrides)), "command line")
