"""Every shipped preset, off the demo's path: two gloo ranks under torchrun, a resume onto one rank, every ONNX
precision (fp32, fp16, int8), the TensorRT parser rules and a served repository.

The frame encoder is shrunk by an override so that a preset runs in seconds (CorrNet's keeps every module at a
sixteenth of the channels); everything else (loss terms, classifiers and their sharing, temporal kernels, widths,
optimiser, decoding) is the preset's own. Presets are found by listing what QSLR ships, so one added later is tested
without a change here. What two presets share is paid for once: a preset that equals another but for its dataset's
folder is asserted equal to it, and the fp16 and int8 graphs are made once per distinct network.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from small_model import TINY_CNN

from qslr.model.checkpoints import load_checkpoint
from qslr.tools.cli import cli
from qslr.train.config import available_presets, load_config
from qslr.train.trainer import train

REPO = Path(__file__).resolve().parents[2]
PRESETS = available_presets()
SMALL_RUN = ["data.crop_size=64", "data.batch_size=2", "data.eval_batch_size=4", "data.num_workers=1",
             "train.log_interval=1"]


def small_encoder(preset: str) -> list[str]:
    """A tiny per-frame CNN in place of the preset's ResNet; CorrNet's encoder keeps its architecture (what its
    presets exist for) at a sixteenth of the channels, with random weights on the small frames."""
    if load_config(preset).model.frame_encoder.arch.startswith("corrnet"):
        return ["model.frame_encoder.weights=null", "model.frame_encoder.options.width=16", *SMALL_RUN,
                "data.crop_size=32"]  # the last crop size given wins
    return [f"model.frame_encoder={{arch: tiny_cnn, weights: null, options: {TINY_CNN}}}",
            *SMALL_RUN]


def without_dataset(preset: str) -> dict:
    """The preset's whole configuration but its name, its dataset's folder and its dev set's gloss rules: scoring does
    not depend on the network, and every rule a preset ships is still scored by some run of the matrix (asserted)."""
    config = load_config(preset).to_dict()
    config.pop("name")
    config["data"].pop("root")
    config["eval"].pop("normalisation")
    return config


def _first_of_each(presets: list[str], key) -> dict[str, str]:
    """preset -> the first preset (in sorted order) with an equal ``key``."""
    first: dict[str, str] = {}
    for preset in presets:
        first[preset] = next(p for p in presets if key(p) == key(preset))
    return first


SAME_AS = _first_of_each(PRESETS, without_dataset)
DISTINCT = sorted(set(SAME_AS.values()))


def network(preset: str) -> dict:
    """The model section the matrix trains and exports for ``preset``: what its graphs are made of."""
    return load_config(preset, small_encoder(preset)).to_dict()["model"]


FIRST_OF_NETWORK = set(_first_of_each(DISTINCT, network).values())


def test_the_matrix_covers_every_shipped_preset():
    assert len(PRESETS) >= 9 and {"phoenix2014-baseline", "phoenix2014-vac", "phoenix2014-corrnet",
                                  "csl-daily-corrnet", "synthetic"} <= set(PRESETS)
    # Phoenix-2014-T's presets are Phoenix-2014's recipes on their own prepared dataset: the same runs.
    assert SAME_AS["phoenix2014t-smkd"] == "phoenix2014-smkd" and SAME_AS["phoenix2014t-corrnet"] == \
        "phoenix2014-corrnet"
    # CorrNet+'s recipe is the same on every corpus; only CSL-Daily's scoring differs.
    assert SAME_AS["phoenix2014-corrnetplus"] == SAME_AS["phoenix2014t-corrnetplus"] == "csl-daily-corrnetplus"
    for preset, representative in SAME_AS.items():
        assert without_dataset(preset) == without_dataset(representative)
        if preset != representative:
            assert load_config(preset).data.root != load_config(representative).data.root
    # The other recipes all differ, and the distinct networks among them each get every precision.
    assert len(DISTINCT) == len(PRESETS) - sum(p.startswith("phoenix2014t-") for p in PRESETS) - 1 and \
        len(FIRST_OF_NETWORK) >= 5
    assert {load_config(p).eval.normalisation for p in DISTINCT} == {load_config(p).eval.normalisation for p in PRESETS}
    assert {"phoenix2014-corrnet", "csl-daily-corrnet", "synthetic"} <= FIRST_OF_NETWORK


def torchrun(preset: str, root: Path, work: Path, *extra: str) -> str:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "qslr.train",
               "--config", preset, f"data.root={root}", f"train.work_dir={work}", *small_encoder(preset), *extra]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def digests(output: str) -> dict[str, str]:
    return dict(re.findall(r"rank (\d) finished at step (\d+) with weights digest \w+", output))


def export(checkpoint: Path, graph: Path, flag: str, *options: str) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["export", "onnx", "--checkpoint", str(checkpoint), "--out", str(graph), flag,
                                 *options])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["export", "check", str(graph)])
    assert result.exit_code == 0 and '"tensorrt_problems": []' in result.output, result.output


@pytest.mark.slow
@pytest.mark.timeout(420)
@pytest.mark.parametrize("preset", DISTINCT)
def test_preset_trains_on_two_ranks_resumes_on_one_exports_and_serves(preset, tiny_corpus, tmp_path, caplog):
    root, work = tiny_corpus[0], tmp_path / "run"
    # Only the encoder differs from the preset: the loss terms and classifiers under test are its own.
    configured = load_config(preset, [f"data.root={root}", *small_encoder(preset)])
    shipped = load_config(preset)
    assert (configured.loss, configured.model.classifier, configured.model.temporal, configured.model.sequence) == \
           (shipped.loss, shipped.model.classifier, shipped.model.temporal, shipped.model.sequence)
    assert configured.model.frame_encoder.options.get("stages") == shipped.model.frame_encoder.options.get("stages")

    output = torchrun(preset, root, work, "train.max_steps=1", "train.epochs=5")
    assert digests(output) == {"0": "1", "1": "1"}, output
    # Its checkpoint goes on in one process (a world-size change, 2 ranks -> 1) from the sample the ranks reached:
    # each rank took one batch of 2 clips of the epoch's 8.
    with caplog.at_level(logging.INFO, logger="qslr.train.trainer"):
        outcome = train(load_config(preset, [f"data.root={root}", f"train.work_dir={work}", *small_encoder(preset),
                                             "train.max_steps=2", "train.epochs=5"]), resume="auto")
    assert "written by 2 rank(s), this run has 1: continuing epoch 0 from sample 4 (batch 2 here)" in caplog.text
    assert outcome.global_step == 2 and not outcome.interrupted
    checkpoint = work / "checkpoints" / "last.pt"
    saved = load_checkpoint(checkpoint)
    assert saved.training["global_step"] == 2 and saved.training["world_size"] == 1
    assert (saved.training["epoch"], saved.training["batch"]) == (0, 3)

    graph = tmp_path / "model-fp32.onnx"
    export(checkpoint, graph, "--fp32")
    if preset in FIRST_OF_NETWORK:
        export(checkpoint, tmp_path / "model-fp16.onnx", "--fp16")
        export(checkpoint, tmp_path / "model-int8.onnx", "--int8", "--calibration-clips", "4")
    result = CliRunner().invoke(cli, ["triton", "build", "--checkpoint", str(checkpoint), "--out",
                                      str(tmp_path / "repo"), "--onnx", str(graph)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "repo").iterdir() if p.is_dir()) == \
           ["cslr", "cslr_clip", "cslr_frames", "ctc_decoder", "preprocess", "visual"]
    assert (tmp_path / "repo" / "visual" / "1" / "model.onnx").read_bytes() == graph.read_bytes()
