"""gpu-check's training judgements on real runs: PyTorch's CPU autocast and CPU GradScaler stand for the GPU's, with
only the rule that keeps AMP to GPUs lifted (as tests/train/test_training.py does)."""

from __future__ import annotations

import math

import pytest
from small_model import SMALL_MODEL

from qslr.tools.gpu_proof import NotProven
from qslr.tools.gpu_training_checks import amp_training, largest_difference, loss_fell
from qslr.tools.gpu_workspace import TrainingRun, output_types
from qslr.train.config import load_config
from qslr.train.trainer import train


def run(root, work, amp: str) -> TrainingRun:
    config = load_config("synthetic", [f"data.root={root}", f"train.work_dir={work}", "train.epochs=3",
                                       f"train.amp={amp}", *SMALL_MODEL])
    with output_types() as seen:
        outcome = train(config)
    return TrainingRun(outcome.history, outcome.global_step, work / "checkpoints" / "last.pt", seen)


@pytest.fixture(scope="module")
def runs(tiny_corpus, tmp_path_factory) -> dict[str, TrainingRun]:
    """A CPU run (float32 whatever the preset says) and the same under PyTorch's CPU fp16 autocast."""
    work = tmp_path_factory.mktemp("amp-runs")
    plain = run(tiny_corpus[0], work / "cpu", "bf16")
    with pytest.MonkeyPatch.context() as patch:
        for module in ("qslr.train.evaluation", "qslr.train.trainer"):
            patch.setattr(f"{module}.amp_active", lambda device, amp: amp != "none")
        fp16 = run(tiny_corpus[0], work / "fp16", "fp16")
    return {"float32": plain, "fp16": fp16}


@pytest.mark.slow
def test_an_fp16_run_with_its_grad_scaler_is_proven(runs):
    details = amp_training(runs["fp16"], "fp16")
    assert details["output_types"] == {"TemporalConv": ["float16"], "BiLSTM": ["float32"]}
    assert details["epochs"] == 3 and details["train_loss_last_epoch"] < details["train_loss_first_epoch"]
    assert 0 < details["grad_scale"] <= 2.0**16 and math.log2(details["grad_scale"]).is_integer()


def test_a_run_without_autocast_or_with_another_type_fails(runs):
    with pytest.raises(AssertionError, match=r"outputs of \{'TemporalConv': \['float32'\], 'BiLSTM': \['float32'\]\}"):
        amp_training(runs["float32"], "bf16")
    with pytest.raises(AssertionError, match="under bf16 the model's parts gave outputs of .*float16"):
        amp_training(runs["fp16"], "bf16")


def test_the_loss_must_fall_over_finite_epochs():
    rows = [{"train_loss": 40.0, "skipped_batches": 0}, {"train_loss": 12.5, "skipped_batches": 0}]
    assert loss_fell(rows, "run") == (40.0, 12.5)
    with pytest.raises(NotProven, match="one epoch here"):
        loss_fell(rows[:1], "20 steps")
    with pytest.raises(AssertionError, match="did not fall"):
        loss_fell(rows[::-1], "run")
    with pytest.raises(AssertionError, match="did not fall"):
        loss_fell([rows[0], {"train_loss": math.nan, "skipped_batches": 0}], "run")
    with pytest.raises(AssertionError, match="2 batches had a non-finite loss"):
        loss_fell([rows[0], {"train_loss": 12.5, "skipped_batches": "2"}], "run")  # metrics.csv's text


def test_runs_compare_by_every_saved_weight_and_statistic(runs):
    assert largest_difference(runs["fp16"], runs["fp16"]) == 0.0
    assert 0 < largest_difference(runs["fp16"], runs["float32"]) < math.inf
