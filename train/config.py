"""The experiment config: typed sections, shipped YAML presets (package data), dotted ``key=value`` overrides.

Priority is command line > YAML (a preset may ``extends:`` another) > the dataclass defaults below,
which are the only place defaults live. Every key is checked: an unknown one is an error that names
the closest valid keys, and every value must have its field's type.
"""

from __future__ import annotations

import contextlib
import difflib
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from qslr.model import decoding_defaults
from qslr.model.loss_terms import TERMS as LOSS_TERMS
from qslr.model.temporal_poolings import MAX, POOLINGS
from qslr.pipelines.loader_choices import LOADERS
from qslr.pipelines.package_data import package_folder

CONFIG_DIR = package_folder("qslr.configs")


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key and the source."""


def _choice(default: Any, *choices: Any) -> Any:
    return field(default=default, metadata={"choices": choices})


def _at_least(default: Any, minimum: float) -> Any:
    return field(default=default, metadata={"minimum": minimum})


def _from_below(default: Any, minimum: float, below: float) -> Any:
    """A value in [minimum, below)."""
    return field(default=default, metadata={"minimum": minimum, "below": below})


@dataclass
class DataConfig:
    root: str = "data/phoenix2014"  # a prepared dataset (see pipelines/prepared.py)
    train_split: str = "train"
    dev_split: str = "dev"
    test_split: str = "test"
    loader: str = _choice("dali", *LOADERS)
    batch_size: int = _at_least(2, 1)
    eval_batch_size: int = _at_least(8, 1)
    num_workers: int = _at_least(4, 0)
    crop_size: int = _at_least(224, 1)  # random crop in training, centre crop otherwise
    flip_prob: float = 0.5
    temporal_rescale: float = 0.2  # training clips are resampled to L * U(1 - r, 1 + r) frames
    # Training clips, normalised to [-1, 1]: x * U(1 - c, 1 + c) + U(-b, b); a gain must stay positive.
    contrast_jitter: float = _from_below(0.0, 0.0, 1.0)
    brightness_jitter: float = _at_least(0.0, 0.0)
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
    pooling: str = _choice(MAX, *POOLINGS)  # of each P: VAC's max-pooling, or CorrNet+'s lifting pool


@dataclass
class SequenceModelConfig:
    hidden_size: int = _at_least(1024, 2)  # both directions together
    num_layers: int = _at_least(2, 1)
    dropout: float = 0.3
    # Not in the original: add the BiLSTM's input to its output, so that the sequence branch starts as the visual
    # one and the recognition loss reaches the visual features directly (docs/benchmarks.md, issue 27's runs).
    residual: bool = False


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
    # A resumable checkpoint every this many optimiser steps as well (checkpoints/step{N}.pt, the newest few kept),
    # so that a failure loses at most this many steps; null: at epoch ends only. docs/training.md has the cost.
    checkpoint_every_steps: int | None = _at_least(None, 1)
    log_interval: int = _at_least(50, 1)


@dataclass
class DecodeConfig:
    method: str = _choice(decoding_defaults.METHOD, *decoding_defaults.METHODS)
    backend: str = _choice(decoding_defaults.BACKEND, *decoding_defaults.BEAM_BACKENDS)
    beam_size: int = _at_least(decoding_defaults.BEAM_SIZE, 1)
    beam_size_token: int = _at_least(decoding_defaults.BEAM_SIZE_TOKEN, 1)  # tokens expanded per frame
    # Videos longer than window_frames are recognised in windows overlapping by context_frames on each side
    # (deploy/serving/buffered.py); both are multiples of the model's frames per output step. The defaults were
    # chosen by measurement on the demo model (docs/benchmarks.md, "Long videos").
    window_frames: int = _at_least(400, 8)
    context_frames: int = _at_least(64, 0)
    # The original's rule (true): a gloss repeated across a blank is one gloss. False: CTC's own rule, two
    # glosses, for corpora that annotate a sign made twice and for videos of several sentences (model/decoding.py).
    merge_repeats: bool = decoding_defaults.MERGE_REPEATS

    def search(self) -> dict[str, Any]:
        """The beam search's own settings (CTCDecoder's keyword arguments)."""
        return {"method": self.method, "backend": self.backend, "beam_size": self.beam_size,
                "beam_size_token": self.beam_size_token, "merge_repeats": self.merge_repeats}


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

# What each scalar field accepts and how an error names it. A bool is an int to Python, never here.
_SCALARS: dict[type, tuple[str, Callable[[Any], bool]]] = {
    bool: ("true or false", lambda v: isinstance(v, bool)),
    int: ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    float: ("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
    str: ("a string", lambda v: isinstance(v, str)),
}


def valid_keys(cls: type = ExperimentConfig, prefix: str = "") -> list[str]:
    """Every dotted key of ``cls``: sections and leaves."""
    keys = []
    for name, tp in typing.get_type_hints(cls).items():
        keys.append(prefix + name)
        if is_dataclass(tp):
            keys.extend(valid_keys(tp, f"{prefix}{name}."))
    return keys


def _unknown_key_error(key: str, source: str) -> ConfigError:
    # The key's own sections are never suggested; the same name in another section is the likeliest slip.
    candidates = [k for k in valid_keys() if not key.startswith(k + ".")]
    leaves = {c: c.rpartition(".")[2] for c in candidates}
    parent, _, leaf = key.rpartition(".")
    close = ([c for c in candidates if leaves[c] == leaf]
             or difflib.get_close_matches(key, candidates, n=3, cutoff=0.6)
             or [c for c in candidates if leaves[c] in difflib.get_close_matches(leaf, leaves.values(), n=3)])[:3]
    siblings = [leaves[c] for c in candidates if c.rpartition(".")[0] == parent]
    hint = (f"did you mean {', '.join(map(repr, close))}?" if close
            else f"valid keys{f' in {parent!r}' if parent else ''}: {', '.join(siblings)}")
    return ConfigError(f"unknown config key {key!r} ({source}); {hint}")


def _coerce(tp: Any, value: Any, key: str, source: str) -> Any:
    def bad(expected: str) -> ConfigError:
        return ConfigError(f"config key {key!r} ({source}): expected {expected}, got {value!r}")

    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):  # `X | None`, the only unions used
        return None if value is None else _coerce(next(a for a in args if a is not type(None)), value, key, source)
    if is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise bad(f"a mapping for section {key!r}")
        return build(tp, value, source, key + ".")
    if typing.get_origin(tp) is list:
        if not isinstance(value, list):
            raise bad(f"a list of {getattr(args[0], '__name__', args[0])}")
        return [_coerce(args[0], v, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if typing.get_origin(tp) is dict:
        if not isinstance(value, Mapping):
            raise bad("a mapping")
        return {str(k): _coerce(args[1], v, f"{key}.{k}", source) for k, v in value.items()}
    if tp is Any:
        return value
    if tp is float and isinstance(value, str):
        # YAML 1.1 reads 1e-4 (no dot) as a string; accept any spelling float() accepts.
        with contextlib.suppress(ValueError):
            value = float(value)
    if tp not in _SCALARS:
        raise TypeError(f"config field {key!r} has a type the loader does not check: {tp!r}")
    expected, accepts = _SCALARS[tp]
    if not accepts(value):
        raise bad(expected)
    return float(value) if tp is float else value


def _check_limits(key: str, value: Any, limits: Mapping[str, Any], source: str) -> None:
    """The ``choices``, ``minimum``, exclusive maximum (``below``) and allowed mapping ``keys`` a field's
    metadata sets."""
    where = f"config key {key!r} ({source})"
    if "choices" in limits and value not in limits["choices"]:
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(str, limits['choices']))}")
    if "minimum" in limits and value is not None and value < limits["minimum"]:
        raise ConfigError(f"{where}: {value!r} is below the minimum {limits['minimum']}")
    if "below" in limits and value is not None and value >= limits["below"]:
        raise ConfigError(f"{where}: {value!r} must be below {limits['below']}")
    for entry in value if "keys" in limits else ():
        if entry not in limits["keys"]:
            raise ConfigError(f"config key '{key}.{entry}' ({source}): unknown entry; "
                              f"valid entries: {', '.join(limits['keys'])}")


def build(cls: type, data: Mapping[str, Any], source: str = "config", prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a nested mapping, rejecting unknown keys, wrong types and values out of
    range. Keys left out keep their defaults: every field has one."""
    hints = typing.get_type_hints(cls)
    limits = {f.name: f.metadata for f in fields(cls)}
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}{name}"
        if name not in hints:
            raise _unknown_key_error(key, source)
        kwargs[name] = _coerce(hints[name], value, key, source)
        _check_limits(key, kwargs[name], limits[name], source)
    return cls(**kwargs)


# --- YAML presets and overrides -------------------------------------------------------------------


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``update`` over ``base``; mappings merge entry by entry at every level, anything else is replaced."""
    merged = dict(base)
    for key, value in update.items():
        both = isinstance(value, Mapping) and isinstance(merged.get(key), Mapping)
        merged[key] = deep_merge(merged[key], value) if both else value
    return merged


def resolve_preset(name_or_path: str | Path, relative_to: Path = CONFIG_DIR) -> Path:
    """A YAML path, or the name of a shipped preset (``phoenix2014-vac``). An ``extends`` names a
    file next to the one that extends it (``relative_to``) or a preset."""
    candidate = Path(name_or_path)
    # From the command line a path is the working directory's; inside a file, that file's folder's.
    first = [candidate] if relative_to == CONFIG_DIR or candidate.is_absolute() else []
    folders = dict.fromkeys((relative_to, CONFIG_DIR))
    for path in (*first, *(folder / name for folder in folders for name in (candidate, f"{candidate}.yaml"))):
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
        raise ConfigError(f"{path}: 'extends' forms a cycle ({' -> '.join(p.name for p in (*_chain, path))})")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    parent = data.pop("extends", None)
    if parent is None:
        return data
    return deep_merge(load_yaml(resolve_preset(parent, path.parent), (*_chain, path)), data)


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """``["optim.lr=1e-3", "loss.weights.Dist=25"]`` -> nested dict; values are parsed as YAML, and a later
    override of the same key wins."""
    nested: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        parts = [part.strip() for part in key.split(".")]
        if not sep or not all(parts):
            raise ConfigError(f"malformed override {item!r}: expected dotted.key=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            raise ConfigError(f"override {item!r}: value is not valid YAML") from None
        for part in reversed(parts):
            value = {part: value}
        nested = deep_merge(nested, value)
    return nested


def load_config(preset: str | Path | None = None, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Defaults, then the preset's YAML, then the command-line overrides.

    Mapping-valued fields (loss weights, builder options) merge entry by entry at every level, so
    ``loss.weights.Dist=25`` adds a term and keeps the others. One exception: an override that changes the frame
    encoder's ``arch`` and gives no ``options`` drops the preset's options, which belong to its own encoder
    (``synthetic model.frame_encoder.arch=corrnet_resnet18`` builds CorrNet, not CorrNet given the small CNN's
    channel widths).
    """
    data = ExperimentConfig().to_dict()
    if preset is not None:
        path = resolve_preset(preset)
        data["name"] = path.stem
        # Validate the YAML on its own first, so that its errors name the file.
        data = deep_merge(data, load_yaml(path))
        build(ExperimentConfig, data, str(path))
    changes = parse_overrides(overrides)
    model_changes = changes.get("model")
    encoder = model_changes.get("frame_encoder") if isinstance(model_changes, dict) else None
    if isinstance(encoder, dict) and encoder.get("arch", data["model"]["frame_encoder"]["arch"]) != \
            data["model"]["frame_encoder"]["arch"] and "options" not in encoder:
        data["model"]["frame_encoder"]["options"] = {}
    return build(ExperimentConfig, deep_merge(data, changes), "command line")
