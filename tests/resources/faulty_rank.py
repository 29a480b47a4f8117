"""`python -m qslr.train` for torchrun, with a fault in one rank of some attempts of the job. QSLR_FAULTS lists
them, `FAULT:RANK:STEP` separated by commas, the first for the job's first attempt, the second for the attempt after
the first restart, and so on (later attempts run clean). FAULT is `kill-while-saving` (SIGKILL halfway through
writing the checkpoint of optimiser step STEP) or `stuck-in-collective` (after that step, waiting for a message of a
peer that never sends it, as a rank stuck in a collective does).

Before a kill the rank writes the processes it started, down to its loader's workers, as {pid: start time} to
QSLR_FAULT_RECORD, so that a test can check that none of them outlives it.
"""

import io
import json
import os
import signal
from pathlib import Path

import torch
import torch.distributed as dist

from qslr.deploy.serving.processes import child_processes
from qslr.train.cli import train_entry
from qslr.train.trainer import Trainer


def start_time(pid: int) -> str:
    """Field 22 of /proc/PID/stat: with the pid, it names one process even where pids are reused."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]


def descendants(pid: int) -> list[int]:
    found = []
    for child in child_processes(pid):
        found += [child, *descendants(child)]
    return found


def die() -> None:
    started = {pid: start_time(pid) for pid in [os.getpid(), *descendants(os.getpid())]}
    Path(os.environ["QSLR_FAULT_RECORD"]).write_text(json.dumps(started))
    os.kill(os.getpid(), signal.SIGKILL)


def inject(fault: str, step: int) -> None:
    optimiser_step, save = Trainer._optimiser_step, torch.save

    def step_then_get_stuck(self):
        optimiser_step(self)
        if self.global_step == step:
            dist.recv(torch.zeros(1), src=1 - self.env.rank)  # a message its peer never sends

    def save_half_then_die(data, handle, *args, **kwargs):
        if not isinstance(data, dict) or data.get("training", {}).get("global_step") != step:  # not a checkpoint
            return save(data, handle, *args, **kwargs)
        whole = io.BytesIO()
        save(data, whole, *args, **kwargs)
        handle.write(whole.getvalue()[:whole.tell() // 2])
        handle.flush()
        os.fsync(handle.fileno())
        die()

    if fault == "stuck-in-collective":
        Trainer._optimiser_step = step_then_get_stuck
    elif fault == "kill-while-saving":
        torch.save = save_half_then_die
    else:
        raise ValueError(f"unknown fault {fault!r}")


# Guarded: the reference loader's workers import this file again as their main module.
if __name__ == "__main__":
    faults = os.environ["QSLR_FAULTS"].split(",")
    attempt = int(os.environ["TORCHELASTIC_RESTART_COUNT"])
    if attempt < len(faults):
        fault, rank, step = faults[attempt].split(":")
        if rank == os.environ["RANK"]:
            inject(fault, int(step))
    train_entry(prog_name="faulty_rank.py")
