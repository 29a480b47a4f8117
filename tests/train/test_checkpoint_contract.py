"""The checkpoint is the model's contract: its input section, typed config, and the migration of old files."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from click.testing import CliRunner

from qslr.model.checkpoints import VERSION, CheckpointError, load_checkpoint, load_file, save_file
from qslr.pipelines.prepared import PreparedDataset
from qslr.pipelines.temporal_padding import padding_for
from qslr.tools.cli import cli
from qslr.train.checkpointing import load_trained
from qslr.train.config import ExperimentConfig


def test_a_trained_checkpoint_states_its_input(checkpoint, tiny_corpus):
    trained = load_trained(checkpoint)
    record = PreparedDataset(tiny_corpus[0]).records("train")[0]
    spec = trained.input
    assert (spec.height, spec.width, spec.fps) == (record.height, record.width, record.fps)
    assert spec.crop_size == trained.config.data.crop_size
    assert spec.kernels == tuple(trained.config.model.temporal.kernels)
    assert (spec.left_padding, spec.total_padding) == padding_for(spec.kernels)
    assert isinstance(trained.config, ExperimentConfig) and trained.vocab


def version_2(data: dict) -> dict:
    """A checkpoint as version 2 wrote it, by hand: the model sections a second time, beside the config."""
    config = copy.deepcopy(data["config"])
    return {**{key: value for key, value in data.items() if key != "config"}, "version": 2,
            "model_sections": copy.deepcopy(config["model"]), "config": config}


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_checkpoint_states_the_network_once_in_its_config(checkpoint):
    data = load_file(checkpoint)
    assert data["version"] == VERSION == 4
    assert set(data) == {"format", "version", "num_classes", "model_state_dict", "vocab", "input", "config",
                         "training"}
    # The model sections are the config's, held nowhere else (version 2 also had a "model_sections" entry).
    sections = data["config"]["model"]
    assert set(sections) == {"frame_encoder", "temporal", "sequence", "classifier"}
    assert load_checkpoint(checkpoint).model_sections == sections == load_trained(checkpoint).config.to_dict()["model"]


def test_a_version_2_checkpoint_loads_to_the_same_network_and_config(checkpoint, tmp_path):
    data = load_file(checkpoint)
    save_file(tmp_path / "v2.pt", version_2(data))
    old, new = load_checkpoint(tmp_path / "v2.pt"), load_checkpoint(checkpoint)
    assert same_weights(old.model.state_dict(), new.model.state_dict())
    assert same_weights(old.model.state_dict(), data["model_state_dict"])
    assert old.config == new.config == data["config"] and old.model_sections == new.model_sections
    assert (old.vocab, old.input, old.training.keys()) == (new.vocab, new.input, new.training.keys())
    assert load_trained(tmp_path / "v2.pt").config == load_trained(checkpoint).config


def test_the_model_sections_of_a_version_2_file_are_what_builds_its_network(checkpoint, tmp_path):
    """Where an old file's two copies disagree, the model sections built the network: they win."""
    data = version_2(load_file(checkpoint))
    data["config"]["model"]["sequence"]["hidden_size"] *= 2
    save_file(tmp_path / "v2.pt", data)
    loaded = load_checkpoint(tmp_path / "v2.pt")
    assert loaded.model_sections == data["model_sections"] != data["config"]["model"]
    assert same_weights(loaded.model.state_dict(), data["model_state_dict"])
    # A converted checkpoint of version 2 had no config at all.
    converted = {**version_2(load_file(checkpoint)), "config": None, "input": None, "training": None}
    save_file(tmp_path / "converted.pt", converted)
    loaded = load_checkpoint(tmp_path / "converted.pt")
    assert loaded.config == {"model": converted["model_sections"]}
    assert same_weights(loaded.model.state_dict(), data["model_state_dict"])
    with pytest.raises(CheckpointError, match="needs a training config"):
        load_trained(tmp_path / "converted.pt")


def test_a_file_without_the_model_section_is_refused_naming_it(checkpoint, tmp_path):
    data = load_file(checkpoint)
    del data["config"]["model"]["temporal"]
    save_file(tmp_path / "bad.pt", data)
    with pytest.raises(CheckpointError, match=r"bad\.pt: its config has no model\.temporal"):
        load_checkpoint(tmp_path / "bad.pt")


def test_model_describe_reports_the_sections_of_old_and_new_files(checkpoint, tmp_path):
    save_file(tmp_path / "v2.pt", version_2(load_file(checkpoint)))
    outputs = [CliRunner().invoke(cli, ["model", "describe", str(path)]) for path in (checkpoint, tmp_path / "v2.pt")]
    assert all(result.exit_code == 0 for result in outputs), [result.output for result in outputs]
    described = [json.loads(result.output) for result in outputs]
    assert described[0] == described[1]
    assert described[0]["model_sections"] == load_file(checkpoint)["config"]["model"]


def test_a_version_1_checkpoint_is_migrated_on_loading(checkpoint, tiny_corpus, tmp_path):
    data = load_file(checkpoint)
    assert data["version"] == VERSION and data["input"]["height"]
    old = {key: value for key, value in version_2(data).items() if key != "input"}
    old["version"] = 1
    save_file(tmp_path / "old.pt", old)
    # With its training data at hand, the frame size comes from there; without, it is unknown, not guessed.
    assert load_trained(tmp_path / "old.pt").input == load_trained(checkpoint).input
    without_data = load_checkpoint(tmp_path / "old.pt").input
    assert (without_data.height, without_data.width) == (None, None)
    assert without_data.crop_size == data["config"]["data"]["crop_size"]
    assert same_weights(load_checkpoint(tmp_path / "old.pt").model.state_dict(), data["model_state_dict"])
    assert load_checkpoint(tmp_path / "old.pt").config == data["config"]
