"""The checkpoint is the model's contract: its input section, typed config, and the migration of old files."""

from __future__ import annotations

import torch

from model.checkpoints import VERSION, load_checkpoint, load_file, save_file
from pipelines.prepared import PreparedDataset
from pipelines.temporal_padding import padding_for
from train.checkpointing import load_trained
from train.config import ExperimentConfig


def test_a_trained_checkpoint_states_its_input(checkpoint, tiny_corpus):
    trained = load_trained(checkpoint)
    record = PreparedDataset(tiny_corpus[0]).records("train")[0]
    spec = trained.input
    assert (spec.height, spec.width, spec.fps) == (record.height, record.width, record.fps)
    assert spec.crop_size == trained.config.data.crop_size
    assert spec.kernels == tuple(trained.config.model.temporal.kernels)
    assert (spec.left_padding, spec.total_padding) == padding_for(spec.kernels)
    assert isinstance(trained.config, ExperimentConfig) and trained.vocab


def test_a_version_1_checkpoint_is_migrated_on_loading(checkpoint, tiny_corpus, tmp_path):
    data = load_file(checkpoint)
    assert data["version"] == VERSION and data["input"]["height"]
    old = {key: value for key, value in data.items() if key != "input"}
    old["version"] = 1
    save_file(tmp_path / "old.pt", old)
    # With its training data at hand, the frame size comes from there; without, it is unknown, not guessed.
    assert load_trained(tmp_path / "old.pt").input == load_trained(checkpoint).input
    without_data = load_checkpoint(tmp_path / "old.pt").input
    assert (without_data.height, without_data.width) == (None, None)
    assert without_data.crop_size == data["config"]["data"]["crop_size"]
    weights = load_checkpoint(tmp_path / "old.pt").model.state_dict()
    assert all(torch.equal(weights[k], v) for k, v in data["model_state_dict"].items())
