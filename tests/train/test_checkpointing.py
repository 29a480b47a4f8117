"""Random streams in training checkpoints: each rank saves and restores its own device's generators only."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from qslr.train.checkpointing import load_training_checkpoint, rng_state, saved_cuda_state, set_rng_state

CPU = torch.device("cpu")


def _draws() -> tuple[float, float, float]:
    return torch.rand(1).item(), float(np.random.rand()), random.random()


def test_a_cpu_run_saves_no_cuda_state_and_restores_its_streams():
    state = rng_state(CPU)
    assert set(state) == {"torch", "numpy", "random"}
    first = _draws()
    set_rng_state(state, CPU)
    assert _draws() == first


def test_the_rank_restores_its_own_device_state():
    own = torch.arange(8, dtype=torch.uint8)
    assert saved_cuda_state({"cuda_device": own}, torch.device("cuda", 3)) is own
    assert saved_cuda_state({"cuda_device": own}, CPU) is None


@pytest.mark.parametrize(("device", "expected"), [(0, 0), (1, 1), (2, 2), (3, None)])
def test_an_old_checkpoint_of_every_gpu_gives_the_rank_its_device_entry(device, expected):
    # Checkpoints written before per-device states hold every visible GPU's state on every rank, by index.
    every_gpu = [torch.full((8,), i, dtype=torch.uint8) for i in range(3)]
    found = saved_cuda_state({"cuda": every_gpu}, torch.device("cuda", device))
    assert found is (None if expected is None else every_gpu[expected])


def test_an_old_cpu_checkpoint_restores_no_cuda_state():
    assert saved_cuda_state({"cuda": []}, torch.device("cuda", 0)) is None


def test_a_training_checkpoint_holds_each_rank_s_own_streams(checkpoint):
    states = load_training_checkpoint(checkpoint)["training"]["rng"]
    assert len(states) == 1 and set(states[0]) == {"torch", "numpy", "random"}  # one CPU rank: no CUDA generator
