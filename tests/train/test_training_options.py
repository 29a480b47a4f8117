"""Training options off the demo's path: gradient accumulation under DDP, clipping, the optimisers, frozen
BatchNorm affines, sclite scoring during training, the refusal of another vocabulary, the second signal."""

from __future__ import annotations

import csv
import math
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from small_model import MODEL, SMALL_MODEL
from torch import nn

from qslr.pipelines.epoch_plan import Sharding
from qslr.tools.cli import cli
from qslr.train.config import load_config
from qslr.train.data import make_loader
from qslr.train.distributed import DistEnv
from qslr.train.evaluation import evaluate
from qslr.train.optim import build_optimizer, trainable_parameters
from qslr.train.trainer import StopRequested, Trainer, train

REPO = Path(__file__).resolve().parents[2]
TINY = [*SMALL_MODEL,
        "train.log_interval=1"]


def config(root: Path, work: Path, *extra: str):
    return load_config("synthetic", [f"data.root={root}", f"train.work_dir={work}", *TINY, *extra])


@pytest.mark.timeout(300)
@pytest.mark.slow
def test_gradient_accumulation_on_two_ranks_steps_every_second_batch_in_step(tiny_corpus, tmp_path):
    """DDP's no_sync on the first batch of each pair: the ranks still end with identical weights, and the optimiser
    steps once per two batches (and at each epoch's last batch)."""
    root, work = tiny_corpus[0], tmp_path / "accumulate"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "qslr.train",
               "--config", "synthetic", f"data.root={root}", f"train.work_dir={work}", *TINY, "train.epochs=2",
               "train.grad_accumulation=2"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=240)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    digests = {rank: (step, digest) for rank, step, digest in
               re.findall(r"rank (\d) finished at step (\d+) with weights digest (\w+)", output)}
    assert set(digests) == {"0", "1"} and digests["0"] == digests["1"], output
    batches = len(make_loader(config(root, work), "train", train=True, sharding=Sharding(0, 2)))
    assert batches >= 2
    assert int(digests["0"][0]) == 2 * math.ceil(batches / 2)


def _one_step(trainer: Trainer) -> dict[str, torch.Tensor]:
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainer.model.train()
    trainer.loader.set_epoch(0, 0)
    batch = next(iter(trainer.loader))
    trainer._step(batch, accumulate=False)
    trainer._optimiser_step()
    return {name: p.detach() - before[name] for name, p in trainer.model.named_parameters()}


def test_gradient_clipping_bounds_an_sgd_step(tiny_corpus, tmp_path):
    """Plain SGD with Nesterov momentum 0.9 moves the weights by 1.9 lr g on its first step: with the gradient's
    norm clipped to c, by at most 1.9 lr c, however large the gradient was."""
    def step(clip: str) -> float:
        trainer = Trainer(config(tiny_corpus[0], tmp_path / clip, "optim.name=sgd", "optim.lr=1.0",
                                 "optim.weight_decay=0", f"train.grad_clip={clip}"), DistEnv(0, 0, 1,
                                                                                          torch.device("cpu")))
        assert isinstance(trainer.optimizer, torch.optim.SGD)
        deltas = _one_step(trainer)
        return float(torch.sqrt(sum((d.float() ** 2).sum() for d in deltas.values())))

    clipped, free = step("0.001"), step("null")
    assert 0 < clipped <= 1.9 * 1.0 * 0.001 * 1.001
    assert free > 10 * clipped  # the gradient itself was far larger than the clip


def test_the_optimisers_differ_in_how_they_decay_weights():
    """A weight of 1 with no gradient and weight decay 0.01, one step at lr 0.1: Adam's coupled L2 becomes a
    gradient that Adam normalises to a full step, AdamW decays the weight directly, SGD takes the small gradient."""
    expected = {"adam": 1 - 0.1, "adamw": 1 - 0.1 * 0.01, "sgd": 1 - 0.1 * 1.9 * 0.01}
    for name, value in expected.items():
        model = nn.Linear(1, 1, bias=False)
        nn.init.ones_(model.weight)
        optimizer = build_optimizer(model, load_config("synthetic", [f"optim.name={name}", "optim.lr=0.1",
                                                                     "optim.weight_decay=0.01"]).optim)
        model.weight.grad = torch.zeros_like(model.weight)
        optimizer.step()
        assert model.weight.item() == pytest.approx(value, abs=1e-6), name


def test_frozen_batchnorm_affines_stay_while_the_rest_trains(tiny_corpus, tmp_path):
    trainer = Trainer(config(tiny_corpus[0], tmp_path / "frozen", "optim.freeze_bn_affine=true"),
                      DistEnv(0, 0, 1, torch.device("cpu")))
    norms = [m for m in trainer.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms and all(not p.requires_grad for m in norms for p in m.parameters())
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert not optimised & {id(p) for m in norms for p in m.parameters()}
    deltas = _one_step(trainer)
    names = {id(p): name for name, p in trainer.model.named_parameters()}
    frozen = {names[id(p)] for m in norms for p in m.parameters()}
    assert all(torch.count_nonzero(deltas[name]) == 0 for name in frozen)
    assert any(torch.count_nonzero(d) for name, d in deltas.items() if name not in frozen)
    assert trainable_parameters(nn.BatchNorm1d(3), freeze_bn_affine=False)  # only when asked


def test_dev_is_scored_by_sclite_during_training_as_by_the_python_scorer(tiny_corpus, tmp_path, monkeypatch):
    from qslr.train.scoring.sclite import ScliteNotFoundError, find_sclite

    try:
        binary = find_sclite()
    except ScliteNotFoundError as exc:
        pytest.skip(f"NIST sclite is not installed (`make sclite`): {exc}")
    # The real sclite, behind a script that notes each call: the run must have scored with it.
    calls = tmp_path / "calls"
    wrapper = tmp_path / "sclite"
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexec {binary} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("QSLR_SCLITE", str(wrapper))
    work = tmp_path / "sclite-run"
    outcome = train(config(tiny_corpus[0], work, "train.epochs=1", "eval.scorer=sclite"))
    assert calls.is_file() and "ref.stm stm" in calls.read_text()
    with (work / "metrics.csv").open() as rows:
        logged = float(list(csv.DictReader(rows))[-1]["dev_wer"])
    trained = Trainer(config(tiny_corpus[0], work / "again", "eval.scorer=python"), DistEnv(0, 0, 1,
                                                                                            torch.device("cpu")))
    trained.model.load_state_dict(torch.load(work / "checkpoints/last.pt", weights_only=False)["model_state_dict"])
    python = evaluate(trained.model, trained.config, "dev", torch.device("cpu"), trained.vocab, tmp_path / "py")
    assert outcome.last_dev_wer == pytest.approx(python.wer, abs=1e-9)  # the same counts, from either scorer
    assert logged == pytest.approx(python.wer, abs=1e-3)  # metrics.csv keeps three decimals


def test_resuming_on_another_vocabulary_is_refused_in_one_line(checkpoint, raw_phoenix, tmp_path):
    other = raw_phoenix[0]  # another synthetic corpus: another vocabulary
    result = CliRunner().invoke(cli, ["train", "--config", "synthetic", f"data.root={other}",
                                      f"train.work_dir={tmp_path / 'w'}", *MODEL, "--resume", str(checkpoint)])
    assert result.exit_code == 1
    (line,) = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert f"{checkpoint}: was trained with another vocabulary than {other}" in line


@pytest.mark.slow
def test_a_second_signal_stops_at_once():
    with StopRequested() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested  # the first one asks for a checkpoint at the next step
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # the second one does not wait for it
    assert signal.getsignal(signal.SIGTERM) is not stop._handle  # the handlers were given back
