"""Training: exact resume, DDP under torchrun (gloo), SyncBatchNorm, faults, and the eval/features commands."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from small_model import DDP_RUN, SMALL_MODEL
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import qslr.model.losses as losses
from qslr.model.checkpoints import load_checkpoint
from qslr.model.network import build_model
from qslr.pipelines.prepared import PreparedDataset
from qslr.pipelines.temporal_padding import padded_length
from qslr.tools.cli import cli
from qslr.train.checkpointing import model_sections
from qslr.train.config import load_config
from qslr.train.distributed import DistEnv, convert_sync_batchnorm
from qslr.train.evaluation import amp_active
from qslr.train.metrics_log import read_metrics
from qslr.train.trainer import Trainer, train, weights_digest

REPO = Path(__file__).resolve().parents[2]
TINY_MODEL = [*SMALL_MODEL,
              "train.log_interval=1", "train.save_interval=1"]


def tiny_config(root: Path, work: Path, *extra: str):
    return load_config("synthetic", [f"data.root={root}", f"train.work_dir={work}", *TINY_MODEL, *extra])


def parameters(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path).model.state_dict()


@pytest.fixture(scope="module")
def straight_run(tiny_corpus, tmp_path_factory):
    """The uninterrupted two-epoch run every resume here is held to, trained once per loader: (outcome, work_dir).
    Tests read its folder and never write to it."""
    runs = {}

    def run(loader: str = "dali"):
        if loader not in runs:
            work = tmp_path_factory.mktemp(f"straight-{loader}")
            runs[loader] = train(tiny_config(tiny_corpus[0], work, "train.epochs=2", f"data.loader={loader}")), work
        return runs[loader]

    return run


# TensorBoard tag -> metrics.csv column: the epoch rows the trainer writes to both.
EPOCH_SCALARS = {"loss/train": "train_loss", "loss/SeqCTC": "loss_SeqCTC", "loss/ConvCTC": "loss_ConvCTC",
                 "wer/dev": "dev_wer", "wer/dev_conv": "dev_wer_conv", "optim/lr": "lr",
                 "throughput/frames_per_s": "frames_per_s"}


def tensorboard_scalars(work: Path) -> dict[str, list[tuple[int, float]]]:
    """What TensorBoard shows of a run: every event file of work/tensorboard, restarts purged."""
    events = EventAccumulator(str(work / "tensorboard"))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def assert_tensorboard_equals_metrics_csv(work: Path, steps: int, dist: bool = True) -> None:
    """``dist``: whether the run had the Dist term (the synthetic preset has it; a run without leaves it out)."""
    rows = read_metrics(work / "metrics.csv")
    scalars = tensorboard_scalars(work)
    tags = {**EPOCH_SCALARS, "loss/Dist": "loss_Dist"} if dist else EPOCH_SCALARS
    for tag, column in tags.items():
        expected = [(int(r["global_step"]), float(r[column])) for r in rows]
        assert [step for step, _ in scalars[tag]] == [step for step, _ in expected], tag
        assert [value for _, value in scalars[tag]] == pytest.approx([v for _, v in expected], rel=1e-5), tag
    if dist:
        assert all(float(r["loss_Dist"]) > 0 for r in rows)
    else:
        assert "loss/Dist" not in scalars and all(r["loss_Dist"] == "" for r in rows)
    assert [step for step, _ in scalars["loss/train_step"]] == list(range(1, steps + 1))  # log_interval=1


@pytest.mark.slow
def test_two_epochs_equal_one_epoch_then_resume_then_one(tiny_corpus, tmp_path, straight_run):
    root = tiny_corpus[0]
    straight, straight_dir = straight_run()
    assert straight.epochs_run == 2 and not straight.interrupted
    train(tiny_config(root, tmp_path / "halves", "train.epochs=1"))
    resumed = train(tiny_config(root, tmp_path / "halves", "train.epochs=2"), resume="auto")
    assert resumed.global_step == straight.global_step
    a, b = parameters(straight_dir / "checkpoints/last.pt"), parameters(tmp_path / "halves/checkpoints/last.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows = read_metrics(straight_dir / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["0", "1"]
    assert all(float(r["loss_SeqCTC"]) > 0 and float(r["loss_ConvCTC"]) > 0 for r in rows)
    assert all(float(r["frames_per_s"]) > 0 and 0 <= float(r["data_wait_fraction"]) <= 1 for r in rows)
    for name in ("best.pt", "epoch0.pt", "epoch1.pt"):
        assert (straight_dir / "checkpoints" / name).is_file()
    # Each epoch's dev WERs are what `qslr eval run` scores of that epoch's checkpoint, branch by branch.
    for row in rows:
        result = CliRunner().invoke(cli, ["eval", "run", "--checkpoint", str(straight_dir / "checkpoints" /
                                                                             f"epoch{row['epoch']}.pt"),
                                          "--split", "dev", "--json", "--out", str(tmp_path / "eval")])
        assert result.exit_code == 0, result.output
        report = json.loads(result.output)
        # (the report rounds to three decimals)
        assert float(row["dev_wer"]) == pytest.approx(report["overall"]["wer"], abs=5e-4)
        assert float(row["dev_wer_conv"]) == pytest.approx(report["branches"]["wer_auxiliary"], abs=5e-4)
    # TensorBoard holds the same values; the resumed run appended to both logs (one event file per run).
    assert_tensorboard_equals_metrics_csv(straight_dir, straight.global_step)
    assert_tensorboard_equals_metrics_csv(tmp_path / "halves", resumed.global_step)
    assert [r["epoch"] for r in read_metrics(tmp_path / "halves/metrics.csv")] == ["0", "1"]
    assert len(list((tmp_path / "halves/tensorboard").glob("events.out.tfevents.*"))) == 2


@pytest.mark.parametrize("loader", ["dali", "reference"])
@pytest.mark.slow
def test_stopping_mid_epoch_at_max_steps_then_resuming_equals_a_straight_run(tiny_corpus, tmp_path, loader,
                                                                            straight_run):
    root = tiny_corpus[0]
    straight, straight_dir = straight_run(loader)
    steps_per_epoch = straight.global_step // 2
    assert steps_per_epoch >= 3
    stopped = train(tiny_config(root, tmp_path / "split", "train.epochs=2", f"train.max_steps={steps_per_epoch + 1}",
                                f"data.loader={loader}"))
    assert stopped.global_step == steps_per_epoch + 1  # one step into the second epoch
    resumed = train(tiny_config(root, tmp_path / "split", "train.epochs=2", f"data.loader={loader}"), resume="auto")
    assert resumed.global_step == straight.global_step
    a, b = parameters(straight_dir / "checkpoints/last.pt"), parameters(tmp_path / "split/checkpoints/last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


# Steps inside the first and the second epoch (4 steps each here), fixed so that a failure repeats.
@pytest.mark.parametrize("stop_at", [3, 6])
@pytest.mark.slow
def test_sigterm_at_a_step_inside_an_epoch_then_resume_equals_a_straight_run(tiny_corpus, tmp_path, monkeypatch,
                                                                            stop_at, straight_run):
    root = tiny_corpus[0]
    straight, straight_dir = straight_run()
    assert 1 <= stop_at < straight.global_step and stop_at % (straight.global_step // 2)  # inside an epoch
    step = Trainer._optimiser_step

    def step_then_sigterm(self):
        step(self)
        if self.global_step == stop_at:
            os.kill(os.getpid(), signal.SIGTERM)  # what a scheduler's preemption sends

    monkeypatch.setattr(Trainer, "_optimiser_step", step_then_sigterm)
    stopped = train(tiny_config(root, tmp_path / "split", "train.epochs=2"))
    assert stopped.interrupted and stopped.global_step == stop_at
    monkeypatch.undo()
    resumed = train(tiny_config(root, tmp_path / "split", "train.epochs=2"), resume="auto")
    assert resumed.global_step == straight.global_step and not resumed.interrupted
    a, b = parameters(straight_dir / "checkpoints/last.pt"), parameters(tmp_path / "split/checkpoints/last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_non_finite_losses_skip_the_batch_and_name_the_videos(tiny_corpus, tmp_path, monkeypatch, caplog):
    real = losses.VACLoss.forward
    calls = {"n": 0}

    def sometimes_infinite(self, output, targets, target_lengths):
        result = real(self, output, targets, target_lengths)
        calls["n"] += 1
        if calls["n"] == 2:
            result.total = result.total * float("inf")
            result.per_sample = result.per_sample * float("inf")
        return result

    monkeypatch.setattr(losses.VACLoss, "forward", sometimes_infinite)
    outcome = train(tiny_config(tiny_corpus[0], tmp_path / "run", "train.epochs=1"))
    assert outcome.history[0]["skipped_batches"] == 1
    assert re.search(r"non-finite loss .* from videos synth-train-\d+", caplog.text)
    weights = parameters(tmp_path / "run/checkpoints/last.pt")
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_the_trainer_builds_its_optimizer_and_network_on_the_sync_batchnorm_model(tiny_corpus, tmp_path,
                                                                                 monkeypatch):
    model = build_model(9, **model_sections(load_config("synthetic", TINY_MODEL)))
    assert convert_sync_batchnorm(model, DistEnv(0, 0, 2, torch.device("cpu"))) is model  # not on CPUs
    converted = convert_sync_batchnorm(model, DistEnv(0, 0, 2, torch.device("cuda")))  # structural: no forward
    assert not {type(m).__name__ for m in converted.modules()} & {"BatchNorm1d", "BatchNorm2d"}
    # The trainer itself, on a CPU, told to convert as it would on GPUs: what it optimises and runs must be the
    # converted model, BatchNorm statistics included (conversion copies buffers into new modules).
    monkeypatch.setattr("qslr.train.trainer.convert_sync_batchnorm",
                        lambda network, env: torch.nn.SyncBatchNorm.convert_sync_batchnorm(network))
    trainer = Trainer(tiny_config(tiny_corpus[0], tmp_path / "sync"), DistEnv(0, 0, 1, torch.device("cpu")))
    kinds = {type(m).__name__ for m in trainer.model.modules()}
    assert "SyncBatchNorm" in kinds and not kinds & {"BatchNorm1d", "BatchNorm2d"}
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert optimised == {id(p) for p in trainer.model.parameters() if p.requires_grad}
    assert trainer.network is trainer.model
    saved = {name for name, _ in trainer.model.named_buffers()}
    assert any(name.endswith("running_mean") for name in saved)


@pytest.mark.gpu
def test_bf16_amp_training_on_a_gpu_keeps_the_lstm_in_float32(tiny_corpus, tmp_path, monkeypatch):
    # One process: SyncBatchNorm needs several GPUs and is checked under torchrun by `qslr bench gpu-check`.
    seen: list[torch.dtype] = []
    build = Trainer.__init__

    def watch(self, *args, **kwargs):
        build(self, *args, **kwargs)
        self.model.temporal.register_forward_hook(lambda module, inputs, out: seen.append(out[0].dtype))
        self.model.sequence.register_forward_hook(lambda module, inputs, out: seen.append(out.dtype))

    monkeypatch.setattr(Trainer, "__init__", watch)
    outcome = train(tiny_config(tiny_corpus[0], tmp_path / "gpu", "train.epochs=1", "train.device=cuda",
                                "train.amp=bf16"))
    assert outcome.epochs_run == 1 and np.isfinite(outcome.history[0]["train_loss"])
    assert seen[:2] == [torch.bfloat16, torch.float32]  # autocast on for the convolutions, off for the LSTM


@pytest.mark.slow
def test_fp16_amp_with_its_grad_scaler_where_pytorch_runs_it_on_a_cpu_resumes_exactly(tiny_corpus, tmp_path,
                                                                                   monkeypatch):
    """The GPU's fp16 path (autocast, GradScaler, the scaler's state in checkpoints) run by PyTorch's own CPU autocast
    and CPU GradScaler: only the device rule that keeps AMP to GPUs is lifted."""
    for module in ("qslr.train.evaluation", "qslr.train.trainer"):
        monkeypatch.setattr(f"{module}.amp_active", lambda device, amp: amp != "none")
    seen: list[torch.dtype] = []
    build = Trainer.__init__

    def watch(self, *args, **kwargs):
        build(self, *args, **kwargs)
        self.model.temporal.register_forward_hook(lambda module, inputs, out: seen.append(out[0].dtype))
        self.model.sequence.register_forward_hook(lambda module, inputs, out: seen.append(out.dtype))

    monkeypatch.setattr(Trainer, "__init__", watch)
    root, fp16 = tiny_corpus[0], ("train.epochs=2", "train.amp=fp16", "train.grad_clip=1.0")
    straight = train(tiny_config(root, tmp_path / "straight", *fp16))
    assert seen[:2] == [torch.float16, torch.float32]  # the convolutions in fp16, the LSTM kept in float32
    scaler = torch.load(tmp_path / "straight/checkpoints/last.pt", weights_only=False)["training"]["scaler"]
    # CTC's gradients overflow fp16 at the scaler's initial 2^16: it skipped those steps and backed off, a state
    # the resume below must carry (a fresh scaler would skip other steps and end at other weights).
    assert scaler["scale"] < 2.0**16 and math.log2(scaler["scale"]).is_integer() and scaler["_growth_tracker"] >= 1
    assert all(np.isfinite(row["train_loss"]) for row in straight.history)
    train(tiny_config(root, tmp_path / "split", *fp16, f"train.max_steps={straight.global_step // 2 + 1}"))
    resumed = train(tiny_config(root, tmp_path / "split", *fp16), resume="auto")
    assert resumed.global_step == straight.global_step
    a, b = parameters(tmp_path / "straight/checkpoints/last.pt"), parameters(tmp_path / "split/checkpoints/last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # Without the device rule lifted, a CPU trains in float32 whatever train.amp says.
    monkeypatch.undo()
    assert not amp_active(torch.device("cpu"), "fp16") and amp_active(torch.device("cuda"), "fp16")


def torchrun(*args: str, **kwargs) -> subprocess.Popen:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "qslr.train",
               *args]
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def overrides(root: Path, work: Path, *extra: str, run: list[str] = TINY_MODEL) -> list[str]:
    return ["--config", "synthetic", f"data.root={root}", f"train.work_dir={work}", *run, *extra]


def test_two_gloo_ranks_under_torchrun_end_with_identical_weights(ddp_straight_run):
    output, work = ddp_straight_run
    digests = _digests(output)
    assert set(digests) == {"0", "1"} and digests["0"] == digests["1"], output
    saved = load_checkpoint(work / "checkpoints/last.pt")
    assert weights_digest(saved.model) == digests["0"]
    assert "gloo process group" in output
    # Rank 0 alone logs: one event file, the same epochs as metrics.csv.
    assert len(list((work / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert_tensorboard_equals_metrics_csv(work, saved.training["global_step"], dist=False)


def sigterm_inside_epoch_1(process: subprocess.Popen) -> str:
    """Send SIGTERM once the run logs a step of its second epoch; its whole output once it has stopped."""
    lines = []
    for line in process.stdout:
        lines.append(line)
        if re.search(r"epoch 1 step \d+ loss", line):
            process.send_signal(signal.SIGTERM)
            break
    return "".join(lines) + process.communicate(timeout=120)[0]


def _digests(output: str) -> dict[str, str]:
    return dict(re.findall(r"rank (\d) finished at step \d+ with weights digest (\w+)", output))


@pytest.mark.timeout(600)
@pytest.mark.slow
def test_two_ranks_stopped_by_sigterm_inside_an_epoch_resume_to_the_straight_runs_weights(tiny_corpus, tmp_path,
                                                                                         ddp_straight_run):
    root = tiny_corpus[0]
    expected = _digests(ddp_straight_run[0])
    # torchrun passes the SIGTERM on to both ranks, which agree on the step to stop at.
    output = sigterm_inside_epoch_1(torchrun(*overrides(root, tmp_path / "split", "train.epochs=40", run=DDP_RUN)))
    state = torch.load(tmp_path / "split/checkpoints/last.pt", weights_only=False)["training"]
    assert state["epoch"] == 1 and state["batch"] >= 1 and state["world_size"] == 2, output
    resumed = torchrun(*overrides(root, tmp_path / "split", run=DDP_RUN), "--resume", "auto")
    output, _ = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, output
    assert _digests(output) == expected, output


@pytest.mark.timeout(300)
@pytest.mark.slow
def test_a_one_process_checkpoint_resumes_on_two_ranks_from_the_same_sample(tiny_corpus, tmp_path, monkeypatch):
    root = tiny_corpus[0]
    step = Trainer._optimiser_step

    def step_then_sigterm(self):
        step(self)
        if self.global_step == 6:  # batch 2 of epoch 1 (4 batches of 2 clips per epoch in one process)
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(Trainer, "_optimiser_step", step_then_sigterm)
    assert train(tiny_config(root, tmp_path / "grow", "train.epochs=2")).interrupted
    monkeypatch.undo()
    process = torchrun(*overrides(root, tmp_path / "grow", "train.epochs=2"), "--resume", "auto")
    output, _ = process.communicate(timeout=240)
    assert process.returncode == 0, output
    # 4 clips of epoch 1 were done: with 2 ranks of 2 clips that is exactly batch 1 here.
    assert "written by 1 rank(s), this run has 2: continuing epoch 1 from sample 4 (batch 1 here)" in output
    digests = _digests(output)
    assert set(digests) == {"0", "1"} and digests["0"] == digests["1"], output
    state = torch.load(tmp_path / "grow/checkpoints/last.pt", weights_only=False)["training"]
    assert (state["epoch"], state["global_step"], state["world_size"]) == (2, 6 + 1, 2)


@pytest.mark.timeout(300)
@pytest.mark.slow
def test_a_crashed_rank_ends_the_job_instead_of_hanging(tiny_corpus, tmp_path):
    process = torchrun(*overrides(tiny_corpus[0], tmp_path / "crash", "train.epochs=50"))
    # Killed once both ranks are training (the main rank logs a step only after a step of both), not after a guess.
    seen = []
    for line in process.stdout:
        seen.append(line)
        if re.search(r"epoch 0 step \d+ loss", line):
            break
    else:
        pytest.fail("the run ended before it trained a step:\n" + "".join(seen))
    found = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True)
    workers = [int(p) for p in found.stdout.split()]
    assert len(workers) >= 2, "the ranks are not torchrun's children"
    os.kill(max(workers), signal.SIGKILL)
    output = "".join(seen) + process.communicate(timeout=120)[0]
    assert process.returncode != 0
    assert "exitcode" in output or "Signal 9" in output or "SIGKILL" in output


@pytest.mark.timeout(300)
@pytest.mark.slow
def test_sigterm_writes_a_resumable_checkpoint(tiny_corpus, tmp_path):
    work = tmp_path / "stop"
    command = [sys.executable, "-m", "qslr.train", *overrides(tiny_corpus[0], work, "train.epochs=40")]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = sigterm_inside_epoch_1(process)
    assert process.returncode == 130, output
    state = torch.load(work / "checkpoints/last.pt", weights_only=False)["training"]
    assert state["epoch"] == 1 and state["batch"] >= 1
    resumed = train(tiny_config(tiny_corpus[0], work, "train.epochs=2"), resume="auto")
    assert resumed.epochs_run == 2 and not resumed.interrupted


def test_eval_run_and_features_commands(tiny_corpus, tmp_path, checkpoint):
    runner = CliRunner()
    result = runner.invoke(cli, ["eval", "run", "--checkpoint", str(checkpoint), "--split", "test", "--json",
                                 "--out", str(tmp_path / "eval"), "decode.method=greedy"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    stm = [line.split()[5:] for line in (tiny_corpus[0] / "test.stm").read_text().splitlines()
           if line.strip() and not line.startswith(";;")]
    overall = report["overall"]
    assert report["split"] == "test" and overall["ref_words"] == sum(len(words) for words in stm)
    assert overall["correct"] + overall["substitutions"] + overall["deletions"] == overall["ref_words"]
    assert overall["wer"] == pytest.approx(100 * overall["errors"] / overall["ref_words"], abs=1e-3)
    hypothesised = {line.split()[0] for line in (tmp_path / "eval/output-hypothesis-test.ctm").read_text().splitlines()}
    assert hypothesised <= {line.split()[0] for line in (tiny_corpus[0] / "test.stm").read_text().splitlines()}
    assert (tmp_path / "eval/output-hypothesis-test.ctm").exists()
    assert (tmp_path / "eval/output-hypothesis-test-conv.ctm").exists()
    result = runner.invoke(cli, ["features", "--checkpoint", str(checkpoint), "--split", "dev", "--out",
                                 str(tmp_path / "features")])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "features/dev/index.jsonl").read_text().splitlines()]
    assert rows and all(r["frames"] % 4 == 0 for r in rows)
    # The padded clip's layout, as docs/training.md states it: 6 copies of the first frame, the clip, then the last
    # frame repeated up to a multiple of 4 plus 12. In eval mode equal frames give equal features.
    records = {r.id: r for r in PreparedDataset(tiny_corpus[0]).records("dev")}
    for row in rows:
        array = np.load(tmp_path / "features/dev" / f"{row['id']}.npy")
        length = records[row["id"]].num_frames
        assert array.shape == (row["frames"], row["feature_dim"]) and array.dtype == np.float32
        assert row["frames"] == -(-length // 4) * 4 + 12 == padded_length(length, ["K5", "P2", "K5", "P2"])
        np.testing.assert_array_equal(array[:6], np.repeat(array[6:7], 6, axis=0))
        np.testing.assert_array_equal(array[6 + length:], np.repeat(array[5 + length:6 + length],
                                                                    row["frames"] - 6 - length, axis=0))
        assert not np.array_equal(array[6], array[5 + length])  # the clip itself is not one repeated frame
