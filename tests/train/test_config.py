"""The experiment config: presets, priority, strict keys and types."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from qslr.tools.cli import cli
from qslr.train.config import (
    ConfigError,
    ExperimentConfig,
    TrainConfig,
    available_presets,
    build,
    load_config,
    parse_overrides,
    valid_keys,
)

REQUIRED_PRESETS = {"phoenix2014-baseline", "phoenix2014-vac", "phoenix2014-smkd", "synthetic"}


@pytest.mark.parametrize("preset", available_presets())
def test_every_preset_builds_and_round_trips(preset):
    config = load_config(preset)
    assert isinstance(config, ExperimentConfig) and config.name == preset
    # The dumped YAML is itself a complete, valid config.
    assert load_config(None, [f"{k}={v}" for k, v in _flatten(yaml.safe_load(config.to_yaml())).items()]) == config


def _flatten(data, prefix=""):
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
    return flat


def test_required_presets_exist():
    assert set(available_presets()) >= REQUIRED_PRESETS


def test_phoenix_presets_hold_the_original_recipe():
    base, vac, smkd = (load_config(f"phoenix2014-{n}") for n in ("baseline", "vac", "smkd"))
    for c in (base, vac, smkd):
        assert (c.optim.name, c.optim.lr, c.optim.weight_decay, c.optim.milestones, c.optim.gamma) == \
            ("adam", 1e-4, 1e-4, [20, 35], 0.2)
        assert (c.train.epochs, c.data.batch_size, c.data.eval_batch_size, c.train.amp) == (40, 2, 8, "none")
        assert (c.data.crop_size, c.data.temporal_rescale, c.data.min_frames, c.data.max_frames) == (224, 0.2, 32, 230)
        assert c.model.frame_encoder.arch == "resnet18" and c.model.temporal.kernels == ["K5", "P2", "K5", "P2"]
        assert (c.model.sequence.hidden_size, c.model.sequence.num_layers, c.model.sequence.dropout) == (1024, 2, 0.3)
        assert (c.decode.beam_size, c.decode.beam_size_token, c.loss.temperature) == (10, 40, 8.0)
    assert base.loss.weights == {"SeqCTC": 1.0}
    assert vac.loss.weights == {"SeqCTC": 1.0, "ConvCTC": 1.0, "Dist": 25.0}
    assert smkd.loss.weights == {"SeqCTC": 1.0, "ConvCTC": 1.0}
    assert (base.model.classifier.weight_norm, base.model.classifier.shared) == (False, False)
    assert (smkd.model.classifier.weight_norm, smkd.model.classifier.shared) == (True, True)


def test_corrnet_presets_hold_its_recipe():
    smkd = load_config("phoenix2014-smkd")
    for name, stages in (("phoenix2014-corrnet", [2, 3, 4]), ("phoenix2014t-corrnet", [2, 3, 4]),
                         ("csl-daily-corrnet", [3, 4])):
        config = load_config(name)
        encoder = config.model.frame_encoder
        assert (encoder.arch, encoder.weights, encoder.options) == ("corrnet_resnet18", "IMAGENET1K_V1",
                                                                     {"stages": stages})
        assert config.loss.weights == {"SeqCTC": 1.0, "ConvCTC": 1.0, "Dist": 25.0} and config.loss.temperature == 8
        assert (config.model.classifier, config.model.temporal, config.model.sequence) == \
            (smkd.model.classifier, smkd.model.temporal, smkd.model.sequence)
    assert load_config("csl-daily-corrnet").data == load_config("csl-daily-smkd").data
    assert load_config("phoenix2014t-corrnet").data.root == "data/phoenix2014t"


def test_corrnetplus_presets_hold_the_original_s_recipe():
    corrnet = load_config("phoenix2014-corrnet")
    for name in ("phoenix2014-corrnetplus", "phoenix2014t-corrnetplus", "csl-daily-corrnetplus"):
        config = load_config(name)
        encoder = config.model.frame_encoder
        assert (encoder.arch, encoder.weights, encoder.options) == ("corrnet_plus_resnet18", "IMAGENET1K_V1",
                                                                     {"stages": [2, 3, 4]})
        assert config.model.temporal.pooling == "lift"
        assert config.loss.weights == {"SeqCTC": 1.0, "ConvCTC": 1.0, "Dist": 25.0, "Cu": 5e-4, "Cp": 5e-4}
        # CorrNet+'s baseline.yaml: 80 epochs, x0.2 at 40 and 60, Adam 1e-4, batch 2, on every corpus.
        assert (config.train.epochs, config.optim.milestones, config.optim.gamma, config.optim.lr) == \
            (80, [40, 60], 0.2, 1e-4)
        assert (config.data.batch_size, config.data.temporal_rescale) == (2, 0.2)
        assert (config.model.classifier, config.model.sequence) == (corrnet.model.classifier, corrnet.model.sequence)
    assert load_config("phoenix2014t-corrnetplus").data.root == "data/phoenix2014t"
    assert (load_config("csl-daily-corrnetplus").data.root, load_config("csl-daily-corrnetplus").eval.normalisation) \
        == ("data/csl-daily", "none")


def test_another_encoder_on_the_command_line_drops_the_preset_s_encoder_options():
    assert load_config("synthetic").model.frame_encoder.options == {"channels": [8, 16, 32, 64]}
    changed = load_config("synthetic", ["model.frame_encoder.arch=corrnet_resnet18"]).model.frame_encoder
    assert (changed.arch, changed.options, changed.weights) == ("corrnet_resnet18", {}, None)
    given = load_config("synthetic", ["model.frame_encoder.arch=corrnet_resnet18",
                                      "model.frame_encoder.options.stages=[3, 4]"]).model.frame_encoder
    assert given.options == {"channels": [8, 16, 32, 64], "stages": [3, 4]}  # options given: merged as ever
    same = load_config("synthetic", ["model.frame_encoder.arch=tiny_cnn"]).model.frame_encoder
    assert same.options == {"channels": [8, 16, 32, 64]}


def test_priority_command_line_over_yaml_over_defaults(tmp_path):
    preset = tmp_path / "mine.yaml"
    preset.write_text("optim:\n  lr: 0.5\n  gamma: 0.3\n")
    config = load_config(preset, ["optim.lr=0.25"])
    assert config.optim.lr == 0.25  # command line
    assert config.optim.gamma == 0.3  # YAML
    assert config.optim.weight_decay == ExperimentConfig().optim.weight_decay  # default
    assert config.name == "mine"


def test_mapping_fields_merge_entry_by_entry():
    config = load_config("phoenix2014-smkd", ["loss.weights.Dist=10"])
    assert config.loss.weights == {"SeqCTC": 1.0, "ConvCTC": 1.0, "Dist": 10.0}


def test_values_are_parsed_and_typed():
    config = load_config(None, ["optim.lr=1e-3", "optim.milestones=[3, 5]", "train.grad_clip=5",
                                "model.frame_encoder.weights=null", "data.flip_prob=0"])
    assert config.optim.lr == 1e-3 and isinstance(config.optim.lr, float)
    assert config.optim.milestones == [3, 5] and config.train.grad_clip == 5.0
    assert config.model.frame_encoder.weights is None and config.data.flip_prob == 0.0


@pytest.mark.parametrize("override, message", [
    ("model.temporal.hiden_size=3", "unknown config key 'model.temporal.hiden_size' (command line); "
                                    "did you mean 'model.temporal.hidden_size'"),
    ("optim.learning_rate=1", "did you mean"),
    ("loss.weights.SeqCtc=1", "valid entries: SeqCTC, ConvCTC, Dist"),
    ("train.epochs=ten", "'train.epochs' (command line): expected an integer, got 'ten'"),
    ("train.epochs=2.5", "expected an integer"),
    ("train.epochs=0", "below the minimum 1"),
    ("data.contrast_jitter=1.0", "'data.contrast_jitter' (command line): 1.0 must be below 1.0"),
    ("data.brightness_jitter=-0.1", "below the minimum 0.0"),
    ("data.loader=opencv", "'opencv' is not one of dali, reference"),
    ("model.classifier.shared=yes please", "expected true or false"),
    ("optim.milestones=5", "expected a list of int"),
    ("model=3", "expected a mapping for section 'model'"),
    # Strict where a converting loader would guess: 1 is not a bool, 5 not a kernel name, '3' not an epoch count.
    ("model.classifier.shared=1", "'model.classifier.shared' (command line): expected true or false, got 1"),
    ("model.temporal.kernels=[K5, 5]", "'model.temporal.kernels[1]' (command line): expected a string, got 5"),
    ("train.epochs='3'", "expected an integer, got '3'"),
    ("train.max_steps=1e3", "'train.max_steps' (command line): expected an integer, got '1e3'"),
    ("optim.lr=", "'optim.lr' (command line): expected a number, got None"),
    ("train.lr=1", "unknown config key 'train.lr' (command line); did you mean 'optim.lr'?"),
    ("foo=1", "unknown config key 'foo' (command line); valid keys: name, data, model, loss, optim, train"),
    ("optim.lr", "malformed override 'optim.lr'"),
    ("optim..lr=1", "malformed override"),
])
def test_bad_overrides_are_errors_that_name_the_key(override, message):
    with pytest.raises(ConfigError) as error:
        load_config("synthetic", [override])
    assert message in str(error.value) and "\n" not in str(error.value)


def test_yaml_types_are_read_as_the_fields_declare(tmp_path):
    # PyYAML follows YAML 1.1: 1e-3 (no dot) is a string, 1 an int; float fields take both as numbers.
    preset = tmp_path / "types.yaml"
    preset.write_text("optim:\n  lr: 1e-3\n  gamma: 1\n  milestones: [3]\nloss:\n  weights: {SeqCTC: 1, Dist: 2.5e1}\n"
                      "model:\n  temporal:\n    kernels: [K3, P2]\n")
    config = load_config(preset)
    assert (config.optim.lr, config.optim.gamma, config.optim.milestones) == (0.001, 1.0, [3])
    assert [type(v) for v in (config.optim.lr, config.optim.gamma, *config.loss.weights.values())] == [float] * 4
    assert config.loss.weights == {"SeqCTC": 1.0, "Dist": 25.0}
    assert config.model.temporal.kernels == ["K3", "P2"]
    preset.write_text("optim:\n  lr: 1e-3x\n")
    with pytest.raises(ConfigError, match=r"'optim.lr' \(.*types.yaml\): expected a number, got '1e-3x'"):
        load_config(preset)


def test_unknown_yaml_key_names_the_file(tmp_path):
    preset = tmp_path / "typo.yaml"
    preset.write_text("optim:\n  lr: 0.1\n  wieght_decay: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'optim.wieght_decay' \(.*typo.yaml\); "
                                          r"did you mean 'optim.weight_decay'"):
        load_config(preset)


def test_extends_names_a_file_beside_it_or_a_preset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # neither is looked up in the working directory
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "base.yaml").write_text("extends: synthetic\ntrain:\n  seed: 5\n")
    (tmp_path / "mine" / "run.yaml").write_text("extends: base\ntrain:\n  epochs: 2\n")
    config = load_config(str(tmp_path / "mine" / "run.yaml"))
    assert (config.train.epochs, config.train.seed, config.model.frame_encoder.arch) == (2, 5, "tiny_cnn")


def test_extends_chains_and_cycles(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b\ntrain:\n  epochs: 3\n")
    (tmp_path / "b.yaml").write_text("extends: phoenix2014-vac.yaml\ntrain:\n  seed: 7\n")
    (tmp_path / "phoenix2014-vac.yaml").write_text("optim:\n  lr: 0.125\n")  # resolved next to b.yaml
    config = load_config(tmp_path / "a.yaml")
    assert (config.train.epochs, config.train.seed, config.optim.lr) == (3, 7, 0.125)
    (tmp_path / "c.yaml").write_text("extends: d\n")
    (tmp_path / "d.yaml").write_text("extends: c\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "c.yaml")


def test_missing_preset_lists_the_known_ones():
    with pytest.raises(ConfigError, match="no such file or preset.*phoenix2014-vac"):
        load_config("phoenix2015-vac")


def test_parse_overrides_nests_keys():
    assert parse_overrides(["a.b=1", "a.c=x", "d=[1, 2]"]) == {"a": {"b": 1, "c": "x"}, "d": [1, 2]}


def test_later_overrides_win_and_mappings_merge():
    config = load_config("synthetic", ["optim.lr=1", "optim.lr=2", "loss.weights={Dist: 5}", "loss.weights.Dist=7"])
    assert config.optim.lr == 2.0 and config.loss.weights == {"SeqCTC": 1.0, "ConvCTC": 1.0, "Dist": 7.0}
    with pytest.raises(ConfigError, match=r"'optim.lr' \(command line\): expected a number, got \{'x': 2\}"):
        load_config("synthetic", ["optim.lr=1", "optim.lr.x=2"])


@dataclass
class _WithPath:
    where: Path = Path(".")


def test_a_field_type_the_loader_cannot_check_is_a_programming_error():
    with pytest.raises(TypeError, match="'where' has a type the loader does not check"):
        build(_WithPath, {"where": "x"})


def test_a_checkpoint_config_is_checked_like_a_preset():
    stored = load_config("phoenix2014-vac").to_dict()
    assert build(ExperimentConfig, stored, "run.pt") == load_config("phoenix2014-vac")
    assert build(ExperimentConfig, {"train": {"epochs": 3}}).train == TrainConfig(epochs=3)  # the rest: defaults
    stored["decode"]["method"] = "viterbi"
    with pytest.raises(ConfigError, match=r"^config key 'decode.method' \(run.pt\): 'viterbi' is not one of beam, gr"):
        build(ExperimentConfig, stored, "run.pt")


def test_valid_keys_cover_sections_and_leaves():
    keys = valid_keys()
    assert {"model", "model.temporal", "model.temporal.hidden_size", "loss.weights", "train.max_steps"} <= set(keys)


def test_config_show_command():
    runner = CliRunner()
    result = runner.invoke(cli, ["config", "show", "phoenix2014-vac", "train.epochs=2"])
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.output)
    assert shown["train"]["epochs"] == 2 and shown["loss"]["weights"]["Dist"] == 25.0
    bad = runner.invoke(cli, ["config", "show", "phoenix2014-vac", "train.epoch=2"])
    assert bad.exit_code == 1 and "did you mean 'train.epochs'" in bad.output
    listed = runner.invoke(cli, ["config", "list"])
    assert set(listed.output.split()) == set(available_presets())
