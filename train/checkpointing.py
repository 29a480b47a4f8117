"""Training checkpoints: the QSLR checkpoint plus everything an exact resume needs."""

from __future__ import annotations

import random
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from model.checkpoints import checkpoint_dict, load_file, save_file
from model.network import SLRModel
from train.config import ExperimentConfig
from train.distributed import DistEnv


def model_sections(config: ExperimentConfig) -> dict[str, dict]:
    model = config.model
    return {"frame_encoder": asdict(model.frame_encoder), "temporal": asdict(model.temporal),
            "sequence": asdict(model.sequence), "classifier": asdict(model.classifier)}


def rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "random": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["random"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def gather_rng_states(env: DistEnv) -> list[dict[str, Any]]:
    """Every rank's RNG state (collective: all ranks must call it)."""
    if not env.distributed:
        return [rng_state()]
    states: list[Any] = [None] * env.world_size
    dist.all_gather_object(states, rng_state())
    return states


def save_training_checkpoint(path: Path, model: SLRModel, config: ExperimentConfig, vocab: dict[str, int],
                             training: dict[str, Any]) -> None:
    save_file(path, checkpoint_dict(model, model_sections(config), vocab, config.to_dict(), training))


def load_training_checkpoint(path: str | Path) -> dict[str, Any]:
    # Our own files hold optimiser states and Python RNG tuples: trusted, fully unpickled.
    data = load_file(path, trust=True)
    if "training" not in data or not data["training"]:
        raise ValueError(f"{path}: holds no training state to resume from")
    return data
