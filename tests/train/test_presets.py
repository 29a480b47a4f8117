"""Every shipped preset, off the demo's path: two gloo ranks under torchrun, a resume, every ONNX precision (fp32,
fp16, int8), the TensorRT parser rules and a served repository.

The frame encoder is shrunk by an override so that a preset runs in seconds (CorrNet's is kept, untrained);
everything else (loss terms, classifiers and their sharing, temporal kernels, widths, optimiser, decoding) is the
preset's own. Presets are found by listing what QSLR ships, so one added later is tested without a change here.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from qslr.model.checkpoints import load_checkpoint
from qslr.tools.cli import cli
from qslr.train.config import available_presets, load_config

REPO = Path(__file__).resolve().parents[2]
PRESETS = available_presets()
SMALL_RUN = ["data.crop_size=64", "data.batch_size=2", "data.eval_batch_size=4", "data.num_workers=1",
             "train.log_interval=1"]


def small_encoder(preset: str) -> list[str]:
    """A tiny per-frame CNN in place of the preset's ResNet; CorrNet's encoder is kept (what its presets exist for,
    and its correlations have no smaller form), with random weights on the small frames."""
    if load_config(preset).model.frame_encoder.arch.startswith("corrnet"):
        return ["model.frame_encoder.weights=null", *SMALL_RUN, "data.crop_size=32"]  # the last crop size given wins
    return ["model.frame_encoder={arch: tiny_cnn, weights: null, options: {channels: [4, 8], out_dim: 16}}",
            *SMALL_RUN]


def test_the_matrix_covers_every_shipped_preset():
    assert len(PRESETS) >= 9 and {"phoenix2014-baseline", "phoenix2014-vac", "phoenix2014-corrnet",
                                  "csl-daily-corrnet", "synthetic"} <= set(PRESETS)


def torchrun(preset: str, root: Path, work: Path, *extra: str) -> str:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "qslr.train",
               "--config", preset, f"data.root={root}", f"train.work_dir={work}", *small_encoder(preset), *extra]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def digests(output: str) -> dict[str, str]:
    return dict(re.findall(r"rank (\d) finished at step (\d+) with weights digest \w+", output))


@pytest.mark.slow
@pytest.mark.timeout(420)
@pytest.mark.parametrize("preset", PRESETS)
def test_preset_trains_on_two_ranks_resumes_exports_and_serves(preset, tiny_corpus, tmp_path):
    root, work = tiny_corpus[0], tmp_path / "run"
    # Only the encoder differs from the preset: the loss terms and classifiers under test are its own.
    configured = load_config(preset, [f"data.root={root}", *small_encoder(preset)])
    shipped = load_config(preset)
    assert (configured.loss, configured.model.classifier, configured.model.temporal, configured.model.sequence) == \
           (shipped.loss, shipped.model.classifier, shipped.model.temporal, shipped.model.sequence)

    output = torchrun(preset, root, work, "train.max_steps=2", "train.epochs=5")
    assert digests(output) == {"0": "2", "1": "2"}, output
    output = torchrun(preset, root, work, "train.max_steps=3", "train.epochs=5", "--resume", "auto")
    assert "resuming from" in output and digests(output) == {"0": "3", "1": "3"}, output
    checkpoint = work / "checkpoints" / "last.pt"
    saved = load_checkpoint(checkpoint)
    assert saved.training["global_step"] == 3 and saved.training["world_size"] == 2

    runner = CliRunner()
    for flag, *options in (("--fp32",), ("--fp16",), ("--int8", "--calibration-clips", "4")):
        graph = tmp_path / f"model{flag[1:]}.onnx"
        result = runner.invoke(cli, ["export", "onnx", "--checkpoint", str(checkpoint), "--out", str(graph), flag,
                                     *options])
        assert result.exit_code == 0, result.output
        result = runner.invoke(cli, ["export", "check", str(graph)])
        assert result.exit_code == 0 and '"tensorrt_problems": []' in result.output, result.output
    result = runner.invoke(cli, ["triton", "build", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "repo")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "repo").iterdir() if p.is_dir()) == \
           ["cslr", "cslr_clip", "cslr_frames", "ctc_decoder", "preprocess", "visual"]
