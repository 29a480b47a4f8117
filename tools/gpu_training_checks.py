"""The training parts of `qslr bench gpu-check`: AMP bf16, AMP fp16 with its GradScaler, exact resume on CUDA, and DDP
with SyncBatchNorm over NCCL on every GPU. Each judges what it ran and returns what it measured."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from qslr.tools.gpu_proof import NotProven
from qslr.tools.gpu_workspace import CROP_SIZE, MODEL, TrainingRun, Workspace, finite

# Under autocast the convolutions compute in the AMP type, while the BiLSTM runs with autocast off in float32
# (model/sequence_model.py): what each gives its output in a training step.
AMP_OUTPUT_TYPES = {"bf16": {"TemporalConv": ["bfloat16"], "BiLSTM": ["float32"]},
                    "fp16": {"TemporalConv": ["float16"], "BiLSTM": ["float32"]}}
# Off in the resume runs only: cuDNN's LSTM dropout draws from a state of its own, seeded once from the CUDA
# generator and then advanced by cuDNN, which no checkpoint can hold; a resumed run would draw other masks.
NO_LSTM_DROPOUT = "model.sequence.dropout=0"


def amp_training(run: TrainingRun, amp: str) -> dict:
    """A run under AMP ``amp`` ran as AMP should and learned: the convolutions computed in the AMP type and the BiLSTM
    in float32, the GradScaler was on exactly for fp16, every loss was finite and the loss fell."""
    types = {name: sorted(seen) for name, seen in run.output_types.items()}
    if types != AMP_OUTPUT_TYPES[amp]:
        raise AssertionError(f"under {amp} the model's parts gave outputs of {types}, expected {AMP_OUTPUT_TYPES[amp]}")
    scaler = run.state()["training"]["scaler"]
    # A disabled GradScaler saves an empty state; fp16 needs it (bf16's range does not).
    if (amp == "fp16") != bool(scaler):
        raise AssertionError(f"under {amp} the GradScaler was {'on' if scaler else 'off'}")
    if amp == "fp16" and not (finite(scaler["scale"]) and scaler["scale"] > 0):
        raise AssertionError(f"the GradScaler's scale ended at {scaler['scale']}")
    rows = run.history
    first, last = loss_fell(rows, f"{run.global_step} steps under {amp}")
    return {"steps": run.global_step, "epochs": len(rows), "train_loss_first_epoch": first,
            "train_loss_last_epoch": last, "dev_wer": rows[-1].get("dev_wer"), "output_types": types,
            **({"grad_scale": scaler["scale"]} if amp == "fp16" else {})}


def loss_fell(rows: list[dict], what: str) -> tuple[float, float]:
    """The mean training loss of the first and last epochs of ``rows`` (metrics.csv's), if every batch's loss was
    finite and the loss fell."""
    if len(rows) < 2:
        raise NotProven(f"{what} are one epoch here, too few to see the loss fall: raise --steps")
    first, last = float(rows[0]["train_loss"]), float(rows[-1]["train_loss"])
    skipped = sum(int(row["skipped_batches"]) for row in rows)
    if skipped:
        raise AssertionError(f"{what}: {skipped} batches had a non-finite loss")
    if not (finite(first) and finite(last) and last < first):
        raise AssertionError(f"{what}: the training loss did not fall ({first} in the first epoch, {last} in the "
                             f"last)")
    return first, last


def fp16_training(workspace: Workspace) -> dict:
    """Two epochs under AMP fp16 with its GradScaler."""
    return amp_training(workspace.train("fp16", "fp16", 2 * workspace.epoch_steps()), "fp16")


def exact_resume(workspace: Workspace) -> dict:
    """A run stopped inside the first epoch and resumed across the epoch's end (where dev is scored and the random
    streams are put back) ends with the weights of one that never stopped. Exactness needs kernels that repeat
    themselves: where two straight runs already differ, nothing is proven."""
    def run(name: str, steps: int, resume: bool = False) -> TrainingRun:
        return workspace.train(name, "fp16", steps, NO_LSTM_DROPOUT, resume=resume)

    total, stop = 3 * workspace.epoch_steps() // 2, 3 * workspace.epoch_steps() // 4
    with deterministic_cudnn():
        straight = run("resume-straight", total)
        run("resume-split", stop)
        resumed = run("resume-split", total, resume=True)
        if resumed.global_step != straight.global_step:
            raise AssertionError(f"the resumed run ended at step {resumed.global_step}, the straight one at "
                                 f"{straight.global_step}")
        apart = largest_difference(straight, resumed)
        if apart == 0:
            return {"steps": total, "stopped_at": stop, "amp": "fp16",
                    "grad_scale": resumed.state()["training"]["scaler"]["scale"], "lstm_dropout": 0}
        again = run("resume-again", total)
    noise = largest_difference(straight, again)
    if noise == 0:
        raise AssertionError(f"the resumed run's weights differ from the straight run's by up to {apart:.2e}, and a "
                             f"second straight run repeats the first exactly")
    raise NotProven(f"CUDA kernels here do not repeat themselves: two straight runs of {total} steps end "
                    f"{noise:.2e} apart (the resumed one {apart:.2e})")


def largest_difference(a: TrainingRun, b: TrainingRun) -> float:
    """Largest |difference| between the two runs' saved weights and statistics; inf where they do not match up."""
    first, second = a.state()["model_state_dict"], b.state()["model_state_dict"]
    if first.keys() != second.keys():
        return float("inf")
    worst = 0.0
    for name, tensor in first.items():
        other = second[name]
        if tensor.shape != other.shape:
            return float("inf")
        worst = max(worst, (tensor.double() - other.double()).abs().max().item() if tensor.numel() else 0.0)
    return worst


@contextmanager
def deterministic_cudnn() -> Iterator[None]:
    """cuDNN's deterministic algorithms only, while open: what PyTorch offers to make two runs equal."""
    saved = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved


def ddp_training(workspace: Workspace) -> dict:
    """torchrun on every GPU: NCCL, SyncBatchNorm and AMP bf16; the ranks end with the same weights."""
    gpus = torch.cuda.device_count()
    work = workspace.root / "ddp"
    steps = workspace.settings.steps
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}", "-m",
               "qslr.train", "--config", "synthetic", f"data.root={workspace.corpus()}", f"train.work_dir={work}",
               "train.device=cuda", "train.amp=bf16", f"train.max_steps={steps}", "train.epochs=1000",
               f"data.crop_size={CROP_SIZE}", "data.loader=reference",
               f"data.num_workers={max(1, workspace.settings.workers // gpus)}", *MODEL]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise RuntimeError(f"torchrun on {gpus} GPUs failed: {output[-1200:]}")
    joined = re.findall(r"joined the (\w+) process group", output)
    if joined != ["nccl"] * gpus:
        raise AssertionError(f"expected {gpus} ranks in an NCCL process group, the log shows {joined}")
    digests = dict(re.findall(r"rank (\d+) finished at step \d+ with weights digest (\w+)", output))
    if len(digests) != gpus or len(set(digests.values())) != 1:
        raise AssertionError(f"the {gpus} ranks ended with the weights {digests}")
    with (work / "metrics.csv").open(newline="") as metrics:
        rows = list(csv.DictReader(metrics))
    first, last = loss_fell(rows, f"{steps} steps on {gpus} GPUs")
    return {"gpus": gpus, "steps": steps, "weights_digest": next(iter(digests.values())),
            "train_loss_first_epoch": first, "train_loss_last_epoch": last}
