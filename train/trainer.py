"""The training loop: DDP over torchrun's ranks, AMP on GPUs, exact resume, dev WER every epoch."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import random
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.progress import Progress, TextColumn
from torch.nn.parallel import DistributedDataParallel

from qslr.model.losses import TERMS, VACLoss
from qslr.model.network import SLRModel, build_model
from qslr.pipelines.atomic_output import copy_atomic
from qslr.pipelines.folder_lock import folder_lock
from qslr.pipelines.prepared import PreparedDataset
from qslr.pipelines.progress import progress_bar
from qslr.train.checkpoint_files import (
    LAST,
    CheckpointWriteError,
    checkpoint_folder,
    drop_step_checkpoints_after,
    keep_as_step_checkpoint,
)
from qslr.train.checkpointing import (
    dataset_input,
    gather_rng_states,
    load_training_checkpoint,
    model_sections,
    rng_state,
    save_training_checkpoint,
    set_rng_state,
)
from qslr.train.config import ExperimentConfig
from qslr.train.data import make_loader
from qslr.train.distributed import (
    DistEnv,
    all_agree,
    convert_sync_batchnorm,
    end_with_agent,
    setup,
    teardown,
    wait_for_evaluation,
)
from qslr.train.elastic import resume_point, run_id, warn_if_restarts_would_fail
from qslr.train.evaluation import amp_active, autocast, evaluate
from qslr.train.loss_reach import parameters_without_loss
from qslr.train.metrics_log import MetricsLog
from qslr.train.optim import build_optimizer, build_scheduler

log = logging.getLogger(__name__)


class StopRequested:
    """SIGTERM / SIGINT set a flag; the loop checkpoints at the next step boundary and exits."""

    def __init__(self):
        self.requested = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequested:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:  # a second signal: stop now
            raise KeyboardInterrupt
        log.warning("received %s: saving a resumable checkpoint after this step", signal.Signals(signum).name)
        self.requested = True

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


@dataclass
class EpochStats:
    """The epoch's figures so far on this rank; checkpoints carry them, so that an epoch resumed inside logs the
    row an uninterrupted one would (its losses and counts; times are each attempt's own)."""

    losses: list[float] = field(default_factory=list)
    terms: dict[str, list[float]] = field(default_factory=dict)  # each loss term's values, unweighted
    skipped: int = 0
    clips: int = 0
    frames: int = 0
    wait: float = 0.0  # seconds spent waiting for the loader
    compute: float = 0.0  # seconds in forward, backward and the optimiser
    interrupted: bool = False

    def rates(self) -> dict[str, float | None]:
        busy = max(self.wait + self.compute, 1e-9)
        return {"train_loss": float(np.mean(self.losses)) if self.losses else math.nan,
                **{f"loss_{term}": float(np.mean(self.terms[term])) if self.terms.get(term) else None
                   for term in TERMS},
                "skipped_batches": self.skipped, "clips_per_s": self.clips / busy, "frames_per_s": self.frames / busy,
                "data_wait_fraction": self.wait / busy}


@dataclass
class TrainOutcome:
    epochs_run: int
    global_step: int
    best_dev_wer: float | None
    last_dev_wer: float | None
    interrupted: bool
    work_dir: Path
    history: list[dict] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


class Trainer:
    def __init__(self, config: ExperimentConfig, env: DistEnv):
        self.config, self.env = config, env
        self.work_dir = Path(config.train.work_dir)
        dataset = PreparedDataset(config.data.root)
        self.vocab = dataset.vocab
        self.input_spec = dataset_input(config, dataset)
        seed_everything(config.train.seed)  # identical initial weights on every rank
        model = build_model(len(self.vocab) + 1, **model_sections(config)).to(env.device)
        self.model: SLRModel = convert_sync_batchnorm(model, env)
        self.optimizer = build_optimizer(self.model, config.optim)
        self.scheduler = build_scheduler(self.optimizer, config.optim)
        # fp16's range needs the loss scaled (bf16's does not).
        self.scaler = torch.amp.GradScaler(env.device.type, enabled=config.train.amp == "fp16" and
                                           amp_active(env.device, config.train.amp))
        self.loss = VACLoss(config.loss.weights, config.loss.temperature)
        self.network = self._distributed(self.model) if env.distributed else self.model
        self.loader = make_loader(config, config.data.train_split, train=True, device=str(env.device),
                                  sharding=env.sharding, vocab=self.vocab)
        self.epoch, self.batch_in_epoch, self.global_step = 0, 0, 0
        self.epoch_stats = EpochStats()
        self.best_wer: float | None = None
        self.checkpoints = checkpoint_folder(self.work_dir)
        seed_everything(config.train.seed + 1000 * env.rank)  # per-rank dropout and sampling streams
        self.metrics: MetricsLog | None = None  # opened by run(), once a resume has set the step

    def _distributed(self, model: SLRModel) -> DistributedDataParallel:
        """DDP over the parameters the loss reaches. Those it never reaches (VAC's baseline leaves the
        convolutional branch's classifier out) would make DDP wait for their gradients forever; its
        find_unused_parameters does not help, since it searches from forward's outputs, and the unused
        classifier's logits are among them. They get no gradient in one process either, so they stay frozen
        for this run; the optimizer keeps them, as it does in one process, so checkpoints are alike."""
        unused = parameters_without_loss(model, self.loss)
        for name in unused:
            model.get_parameter(name).requires_grad_(False)
        if unused and self.env.is_main:
            log.info("the loss terms %s reach no gradient of %s: left out of DDP", ", ".join(self.loss.weights),
                     ", ".join(sorted({name.rpartition(".")[0] for name in unused})))
        return DistributedDataParallel(model, device_ids=[self.env.local_rank] if self.env.device.type == "cuda"
                                       else None)

    # --- checkpoints ---------------------------------------------------------------------------------

    def save(self) -> None:
        """Write checkpoints/last.pt, the resumable state (collective). A write that fails stops every rank with
        CheckpointWriteError; the previous last.pt is left as it was."""
        states = gather_rng_states(self.env)  # collective
        failure = None
        if self.env.is_main:
            training = {"epoch": self.epoch, "batch": self.batch_in_epoch, "global_step": self.global_step,
                        "best_dev_wer": self.best_wer, "optimizer": self.optimizer.state_dict(),
                        "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                        "rng": states, "world_size": self.env.world_size, "epoch_stats": asdict(self.epoch_stats),
                        "run": run_id()}
            path = self.checkpoints / LAST
            try:
                save_training_checkpoint(path, self.model, self.config, self.vocab, self.input_spec, training)
                log.info("saved %s (epoch %d, batch %d, step %d)", path, self.epoch, self.batch_in_epoch,
                         self.global_step)
            except OSError as exc:  # what the disk refused: anything else is a fault of the program
                failure = CheckpointWriteError(f"{path}: cannot write the checkpoint ({exc.strerror or exc}); the "
                                               f"run stops, and the checkpoint written before stays")
            if self.metrics:
                # What TensorBoard has queued of the steps up to here: after a restart from this checkpoint these
                # steps are not run again.
                self.metrics.flush()
        if not all_agree(failure is None, self.env):
            raise failure or CheckpointWriteError("the main rank could not write a checkpoint: stopping")

    def _save_step_checkpoint(self) -> None:
        self.save()
        if self.env.is_main:
            kept = keep_as_step_checkpoint(self.checkpoints, self.global_step)
            log.info("kept the checkpoint of step %d as %s", self.global_step, kept.name)

    def resume(self, path: str | Path, data: dict | None = None) -> None:
        """Continue from the checkpoint at ``path`` (``data``: what was already read of it)."""
        data = data if data is not None else load_training_checkpoint(path)
        if data.get("vocab") != self.vocab:
            raise ValueError(f"{path}: was trained with another vocabulary than {self.config.data.root}")
        self.model.load_state_dict(data["model_state_dict"])
        training = data["training"]
        self.optimizer.load_state_dict(training["optimizer"])
        self.scheduler.load_state_dict(training["scheduler"])
        self.scaler.load_state_dict(training["scaler"])
        self.epoch, self.batch_in_epoch = training["epoch"], training["batch"]
        self.global_step, self.best_wer = training["global_step"], training["best_dev_wer"]
        if "epoch_stats" in training:  # written before they were carried: the epoch's row covers the rest only
            self.epoch_stats = EpochStats(**{**training["epoch_stats"], "interrupted": False})
        states = training["rng"]
        written_by = training.get("world_size", len(states))
        if written_by == self.env.world_size:
            set_rng_state(states[self.env.rank], self.env.device)
        else:
            # Batch b of every rank holds the epoch's samples b * batch * world up to the next batch's, so the
            # epoch's first batch * batch_size * world samples are done whatever the world size: continue from
            # the batch of this run that holds that position (rounded down: a few samples may be seen twice,
            # none skipped). Each rank's random streams belonged to its old shard and start afresh.
            done = self.batch_in_epoch * self.config.data.batch_size * written_by
            self.batch_in_epoch = done // (self.config.data.batch_size * self.env.world_size)
            log.warning("%s was written by %d rank(s), this run has %d: continuing epoch %d from sample %d "
                        "(batch %d here); RNG streams start afresh", path, written_by, self.env.world_size,
                        self.epoch, done, self.batch_in_epoch)
        log.info("resuming from %s at epoch %d, batch %d (step %d)", path, self.epoch, self.batch_in_epoch,
                 self.global_step)

    # --- the loop ------------------------------------------------------------------------------------

    def _step(self, batch, accumulate: bool) -> tuple[float, dict[str, float], bool]:
        """Forward and backward of one batch; returns (loss, its terms, finite on every rank)."""
        device = self.env.device
        sync = contextlib.nullcontext() if not (accumulate and self.env.distributed) else self.network.no_sync()
        with sync:
            with autocast(device, self.config.train.amp):
                output = self.network(batch.videos.to(device, non_blocking=True), batch.lengths.to(device))
            result = self.loss(output, batch.targets.to(device), batch.target_lengths.to(device))
            finite = all_agree(result.is_finite(), self.env)
            if not finite:
                if not result.is_finite():
                    log.warning("skipping a batch with a non-finite loss (%s) from videos %s", result.total.item(),
                                ", ".join(result.nonfinite_ids(batch.ids)))
                return math.nan, {}, False
            self.scaler.scale(result.total / self.config.train.grad_accumulation).backward()
        # One transfer for the total and every term (each .item() would wait for the device on its own).
        values = torch.stack([result.total.detach().float(), *(t.detach().float() for t in result.terms.values())])
        total, *terms = values.tolist()
        return total, dict(zip(result.terms, terms, strict=True)), True

    def _optimiser_step(self) -> None:
        if self.config.train.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.train.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.global_step += 1

    def _progress(self) -> Progress:
        return progress_bar("batches", TextColumn("epoch {task.fields[epoch]}"),
                            TextColumn("loss {task.fields[loss]:.3f}"), enabled=self.env.is_main)

    def _train_epoch(self, stop: StopRequested) -> EpochStats:
        """Train from the current position to the end of the epoch, a stop request, or max_steps."""
        accumulation = self.config.train.grad_accumulation
        self.loader.set_epoch(self.epoch, self.batch_in_epoch)
        self.model.train()
        total = len(self.loader)
        stats = self.epoch_stats
        with self._progress() as progress:
            task = progress.add_task("train", total=total, completed=self.batch_in_epoch, epoch=self.epoch,
                                     loss=float("nan"))
            mark = time.perf_counter()
            for batch in self.loader:
                ready = time.perf_counter()
                closes_step = (self.batch_in_epoch + 1) % accumulation == 0 or self.batch_in_epoch + 1 == total
                loss, terms, finite = self._step(batch, accumulate=not closes_step)
                stepped = finite and closes_step
                if not finite:
                    stats.skipped += 1
                    self.optimizer.zero_grad(set_to_none=True)
                else:
                    stats.losses.append(loss)
                    for term, value in terms.items():
                        stats.terms.setdefault(term, []).append(value)
                    if closes_step:
                        self._optimiser_step()
                        self._log_step(loss)
                self.batch_in_epoch += 1
                stats.clips, stats.frames = stats.clips + len(batch), stats.frames + batch.frames
                done = time.perf_counter()
                stats.wait, stats.compute, mark = stats.wait + ready - mark, stats.compute + done - ready, done
                progress.update(task, advance=1, loss=float(np.mean(stats.losses[-20:])) if stats.losses else math.nan)
                if stepped and self._step_checkpoint_due(total):
                    self._save_step_checkpoint()
                if not all_agree(not stop.requested, self.env):
                    stats.interrupted = True
                    break
                if self._out_of_steps():
                    break
        return stats

    def _step_checkpoint_due(self, batches: int) -> bool:
        """Every checkpoint_every_steps steps, but where the epoch's end or the run's (max_steps) saves anyway."""
        every = self.config.train.checkpoint_every_steps
        return bool(every) and self.global_step % every == 0 and self.batch_in_epoch < batches and \
            not self._out_of_steps()

    def _log_step(self, loss: float) -> None:
        if self.env.is_main and self.global_step % self.config.train.log_interval == 0:
            log.info("epoch %d step %d loss %.4f lr %.2e", self.epoch, self.global_step, loss,
                     self.optimizer.param_groups[0]["lr"])
            if self.metrics:
                self.metrics.step_loss(self.global_step, loss)

    def run(self, stop: StopRequested) -> TrainOutcome:
        """Train to the configured end; the metrics log continues from the (resumed) step and is closed after."""
        self.metrics = MetricsLog(self.work_dir, self.global_step) if self.env.is_main else None
        try:
            return self._run(stop)
        finally:
            if self.metrics:
                self.metrics.close()
                self.metrics = None

    def _run(self, stop: StopRequested) -> TrainOutcome:
        cfg = self.config.train
        history: list[dict] = []
        last_wer = None
        while self.epoch < cfg.epochs and not self._out_of_steps():
            started = time.perf_counter()
            stats = self._train_epoch(stop)
            if stats.interrupted:
                self.save()
                return TrainOutcome(self.epoch, self.global_step, self.best_wer, last_wer, True, self.work_dir,
                                    history)
            if self.batch_in_epoch < len(self.loader):
                # max_steps ended the run inside the epoch: the epoch stays open (no scheduler step), so that a
                # resume finishes it exactly as an uninterrupted run would; dev is scored as at an epoch's end.
                last_wer = self._close_run(self.epoch, started, stats, history, complete=False)
                break
            lr = self.optimizer.param_groups[0]["lr"]
            self.scheduler.step()
            finished = self.epoch
            self.epoch, self.batch_in_epoch, self.epoch_stats = self.epoch + 1, 0, EpochStats()
            evaluate_now = (finished + 1) % cfg.eval_interval == 0 or self.epoch >= cfg.epochs or self._out_of_steps()
            wer = self._close_run(finished, started, stats, history, complete=True, evaluate_now=evaluate_now,
                                  lr=lr)
            last_wer = wer if evaluate_now else last_wer
        return TrainOutcome(self.epoch, self.global_step, self.best_wer, last_wer, False, self.work_dir, history)

    def _close_run(self, epoch: int, started: float, stats: EpochStats, history: list[dict], complete: bool,
                   evaluate_now: bool = True, lr: float | None = None) -> float | None:
        """Score dev (when due), log the epoch's row and write the checkpoints; returns the dev WER."""
        dev_wer, dev_wer_conv = self._evaluate_dev(epoch) if evaluate_now else (None, None)
        row = {"epoch": epoch, "global_step": self.global_step,
               "lr": self.optimizer.param_groups[0]["lr"] if lr is None else lr, "dev_wer": dev_wer,
               "dev_wer_conv": dev_wer_conv, "epoch_seconds": time.perf_counter() - started, **stats.rates()}
        history.append(row)
        if self.metrics:
            self.metrics.append(**row)
        self._save_epoch_checkpoints(epoch, dev_wer, complete)
        return dev_wer

    def _out_of_steps(self) -> bool:
        return self.config.train.max_steps is not None and self.global_step >= self.config.train.max_steps

    def _evaluate_dev(self, epoch: int) -> tuple[float | None, float | None]:
        """Dev WER of the BiLSTM and the conv branch, on the main rank (None on the others)."""
        wer = wer_conv = None
        # Scoring must not move the training's random streams (a DataLoader draws its base seed from them):
        # a run scored mid-epoch, then resumed, has to continue exactly as one that was not.
        state = rng_state(self.env.device)
        if self.env.is_main:
            result = evaluate(self.model, self.config, self.config.data.dev_split, self.env.device, self.vocab,
                              self.work_dir / f"epoch{epoch}_result")
            wer, wer_conv = result.wer, result.branches.wer_auxiliary
            log.info("epoch %d: dev WER %.2f %% (conv branch %.2f %%), %.1f s", epoch, wer,
                     result.branches.wer_auxiliary, result.seconds)
        wait_for_evaluation(self.env)
        set_rng_state(state, self.env.device)
        return wer, wer_conv

    def _save_epoch_checkpoints(self, epoch: int, dev_wer: float | None, complete: bool = True) -> None:
        improved = dev_wer is not None and (self.best_wer is None or dev_wer < self.best_wer)
        if improved:
            self.best_wer = dev_wer
        self.save()
        if self.env.is_main:
            last = self.checkpoints / LAST
            if improved:
                copy_atomic(last, self.checkpoints / "best.pt")
            if complete and epoch % self.config.train.save_interval == 0:
                copy_atomic(last, self.checkpoints / f"epoch{epoch}.pt")


def weights_digest(model: torch.nn.Module) -> str:
    """A hash of every parameter: equal on all DDP ranks when they are in step (BatchNorm statistics are
    not parameters, and on CPUs each rank keeps its own)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.named_parameters()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def train(config: ExperimentConfig, resume: str | None = None) -> TrainOutcome:
    """Entry point of one rank (``python -m train`` under torchrun, or a plain process). Rank 0 holds the
    work_dir's lock for the run, taken before it joins the process group, so a second run into the same folder
    stops there and torchrun stops its other ranks."""
    end_with_agent()
    if int(os.environ.get("RANK", "0")) != 0:
        return _train_rank(config, resume)
    with folder_lock(config.train.work_dir, "work_dir"):
        return _train_rank(config, resume)


def _train_rank(config: ExperimentConfig, resume: str | None) -> TrainOutcome:
    env = setup(config.train.device)
    try:
        if env.is_main:
            Path(config.train.work_dir).mkdir(parents=True, exist_ok=True)
            (Path(config.train.work_dir) / "config.yaml").write_text(config.to_yaml())
        warn_if_restarts_would_fail(env)
        trainer = Trainer(config, env)
        start = resume_point(trainer.checkpoints, resume, env)
        if start:
            trainer.resume(*start)
        if env.is_main:
            drop_step_checkpoints_after(trainer.checkpoints, trainer.global_step)
        with StopRequested() as stop:
            outcome = trainer.run(stop)
        log.info("rank %d finished at step %d with weights digest %s", env.rank, outcome.global_step,
                 weights_digest(trainer.model))
        return outcome
    finally:
        teardown()
