"""Training checkpoints: the QSLR checkpoint plus everything an exact resume needs."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from qslr.model.checkpoints import (
    CheckpointError,
    InputSpec,
    checkpoint_dict,
    input_spec_for,
    load_checkpoint,
    load_file,
    save_file,
)
from qslr.model.network import SLRModel
from qslr.pipelines.prepared import PreparedDataset
from qslr.train.config import ExperimentConfig, build
from qslr.train.distributed import DistEnv


def model_sections(config: ExperimentConfig) -> dict[str, dict]:
    """build_model's keyword arguments: the config's model section, as a checkpoint stores it."""
    return asdict(config.model)


def rng_state(device: torch.device) -> dict[str, Any]:
    """This process's random streams: the CPU's, and the CUDA generator of ``device`` alone when it is a GPU.

    Each rank draws only from its own GPU; saving every visible GPU's generator on every rank (as checkpoints did
    before) wrote the same streams once per rank and made each rank restore the others' devices too."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "random": random.getstate()}
    if device.type == "cuda":
        state["cuda_device"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["random"])
    cuda = saved_cuda_state(state, device)
    if cuda is not None:
        torch.cuda.set_rng_state(cuda, device)


def saved_cuda_state(state: dict[str, Any], device: torch.device) -> torch.Tensor | None:
    """The CUDA generator state ``state`` holds for ``device``, or None (a CPU run, or none saved for it).

    Checkpoints written before per-device states hold a list of every visible GPU's ("cuda"), indexed by device:
    the rank's own entry is taken, if that machine had the device."""
    if device.type != "cuda":
        return None
    if "cuda_device" in state:
        return state["cuda_device"]
    every_device = state.get("cuda") or []
    index = device.index if device.index is not None else torch.cuda.current_device()
    return every_device[index] if index < len(every_device) else None


def gather_rng_states(env: DistEnv) -> list[dict[str, Any]]:
    """Every rank's RNG state (collective: all ranks must call it)."""
    if not env.distributed:
        return [rng_state(env.device)]
    states: list[Any] = [None] * env.world_size
    dist.all_gather_object(states, rng_state(env.device))
    return states


def save_training_checkpoint(path: Path, model: SLRModel, config: ExperimentConfig, vocab: dict[str, int],
                             input_spec: InputSpec, training: dict[str, Any]) -> None:
    save_file(path, checkpoint_dict(model, config.to_dict(), vocab, input_spec, training))


def dataset_input(config: ExperimentConfig, dataset: PreparedDataset) -> InputSpec:
    """The input contract of a model trained on ``config``'s dataset: its training videos' size and rate, and how
    they were made from their source videos (the dataset's framing.json)."""
    frames = dataset_frames(dataset)
    if frames is None:
        raise ValueError(f"{config.data.root}: no prepared training videos to take the frame size from")
    return input_spec_for(config.model.temporal.kernels, config.data.crop_size, *frames, dataset.source_framing())


def dataset_frames(dataset: str | Path | PreparedDataset) -> tuple[int, int, float] | None:
    """(height, width, fps) of a prepared dataset's first video, or None where there is none: the only place a
    checkpoint's frame size is read from data (in training, and for checkpoints written before they carried it)."""
    try:
        dataset = dataset if isinstance(dataset, PreparedDataset) else PreparedDataset(dataset)
        record = dataset.records(dataset.splits()[0])[0]
    except (OSError, ValueError, IndexError):
        return None
    return record.height, record.width, record.fps


@dataclass
class TrainedModel:
    """A checkpoint from `qslr train`, typed: the network, its config, vocabulary and input contract."""

    model: SLRModel
    config: ExperimentConfig
    vocab: dict[str, int]
    input: InputSpec


def load_trained(path: str | Path) -> TrainedModel:
    loaded = load_checkpoint(path, dataset_frames)
    if loaded.vocab is None or loaded.input is None:
        raise CheckpointError(f"{path}: needs a training config, vocabulary and input section (a checkpoint "
                              f"from `qslr train`)")
    return TrainedModel(loaded.model, build(ExperimentConfig, loaded.config, str(path)), loaded.vocab, loaded.input)


def load_training_checkpoint(path: str | Path) -> dict[str, Any]:
    # Our own files hold optimiser states and Python RNG tuples: trusted, fully unpickled.
    data = load_file(path, trust=True)
    if "training" not in data or not data["training"]:
        raise ValueError(f"{path}: holds no training state to resume from")
    return data
