"""Process-group set-up for torchrun: NCCL on GPUs, gloo on CPUs, SyncBatchNorm only where it works."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from qslr.pipelines.epoch_plan import Sharding
from qslr.pipelines.process_lifetime import end_with

log = logging.getLogger(__name__)


def _minutes(variable: str, default: float) -> timedelta:
    return timedelta(minutes=float(os.environ.get(variable, default)))


# A rank that dies mid-collective makes the others fail after this long instead of waiting forever.
COLLECTIVE_TIMEOUT = _minutes("QSLR_COLLECTIVE_TIMEOUT_MIN", 10)
# The other ranks wait this long while the main rank scores dev: a beam search over Phoenix's dev split on one
# process can outlast the collective timeout, which is meant for a dead rank, not a slow one.
EVALUATION_TIMEOUT = _minutes("QSLR_EVALUATION_TIMEOUT_MIN", 180)
_evaluation_group = None


@dataclass(frozen=True)
class DistEnv:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def sharding(self) -> Sharding:
        return Sharding(self.rank, self.world_size)


def under_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ


def end_with_agent() -> None:
    """Under torchrun, make this rank end with its agent, its parent: a launcher or a machine's agent that is
    killed leaves no rank training on without it (torchrun stops the ranks of a live agent itself)."""
    if under_torchrun():
        end_with(os.getppid())


def setup(device: str = "auto") -> DistEnv:
    """Read torchrun's environment (a plain process is a world of one) and join the process group."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and device != "cpu"
    if device == "cuda" and not cuda:
        raise RuntimeError("train.device=cuda but CUDA is not available on this machine")
    if cuda:
        torch.cuda.set_device(local_rank)
    target = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", timeout=COLLECTIVE_TIMEOUT,
                                device_id=target if cuda else None)
        log.info("rank %d of %d joined the %s process group", rank, world_size, dist.get_backend())
    if world_size > 1:
        global _evaluation_group
        # Its own group, so its own timeout; gloo waits on the CPU, whatever backend trains.
        _evaluation_group = dist.new_group(backend="gloo", timeout=EVALUATION_TIMEOUT)
    return DistEnv(rank, local_rank, world_size, target)


def teardown() -> None:
    global _evaluation_group
    _evaluation_group = None
    if dist.is_initialized():
        dist.destroy_process_group()


def convert_sync_batchnorm(model: nn.Module, env: DistEnv) -> nn.Module:
    """SyncBatchNorm across GPUs; PyTorch's SyncBatchNorm does not run on CPUs, where each rank keeps its
    own BatchNorm statistics (gradients are still averaged). Call before building the optimizer."""
    if env.device.type == "cuda" and env.distributed:
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def all_agree(flag: bool, env: DistEnv) -> bool:
    """True only if every rank says True (one small all-reduce)."""
    if not env.distributed:
        return flag
    value = torch.tensor([0.0 if flag else 1.0], device=env.device)
    dist.all_reduce(value)
    return value.item() == 0.0


def wait_for_evaluation(env: DistEnv) -> None:
    """Every rank waits here until the main rank has scored dev, for up to EVALUATION_TIMEOUT."""
    if env.distributed:
        dist.barrier(group=_evaluation_group)
