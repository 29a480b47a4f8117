"""torchrun's restarts of a training job: the launcher's side and the restarted worker's side.

torchrun's elastic agent restarts the whole worker group when a worker fails (``--max-restarts``) or a machine
joins (``--nnodes MIN:MAX``). The launcher here is torchrun's own, run in this process, whose agent also puts why
it restarted the group into the restarted workers' environment. A worker started by torchrun resumes by itself
from the newest checkpoint of its work_dir when that checkpoint was written by the same torchrun job (its
rendezvous run id): a restart, whatever ``--resume`` said when the job was launched.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch.distributed as dist

from qslr.train.checkpoint_files import newest_loadable
from qslr.train.checkpointing import load_training_checkpoint
from qslr.train.distributed import DistEnv

log = logging.getLogger(__name__)

RESTART_CAUSE = "QSLR_RESTART_CAUSE"  # set by the launcher's agent in the environment of the workers it restarts
# torchrun shares its rendezvous store with the workers and keeps it across restarts, so a restarted worker can read
# the previous attempt's addresses and fail to connect (pytorch/pytorch#135712, again in PyTorch 2.14: the server is
# made at the first rendezvous only). Set for torchrun's agent, this makes every attempt's rank 0 serve a new store.
UNSHARED_STORE = {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
_NOT_RECORDED = "not recorded (launched by torchrun itself: its agent's 'failed (exitcode: ...)' line says)"


def run_id() -> str | None:
    """The torchrun job this process is a worker of (one id across its restarts), None outside torchrun."""
    return os.environ.get("TORCHELASTIC_RUN_ID")


# --- the launcher --------------------------------------------------------------------------------------------


def describe_failures(failures: dict[int, Any]) -> str:
    """``failures``: torchrun's ProcessFailure per global rank, in the order torchrun saw them (the ranks it stopped
    itself, after a failure, come last)."""
    host = socket.gethostname()
    described = []
    for rank, failure in failures.items():
        how = (f"was killed by {failure.signal_name()}" if failure.exitcode < 0
               else f"exited with code {failure.exitcode}")
        when = time.strftime("%H:%M:%S", time.localtime(failure.timestamp))
        described.append(f"rank {rank} (pid {failure.pid} on {host}) {how} at {when}")
    return "; then ".join(described)


def _recording_agent(agent: type) -> type:
    class RecordingAgent(agent):
        """torchrun's agent, telling the workers it restarts why it restarts them."""

        _cause: str | None = None

        def _monitor_workers(self, worker_group):
            result = super()._monitor_workers(worker_group)
            if result.failures:
                self._cause = describe_failures(result.failures)
            elif result.state.name == "UNHEALTHY":
                self._cause = "the worker group was unhealthy (a worker stuck in the kernel)"
            return result

        def _restart_workers(self, worker_group) -> None:
            # No failure seen: the agent restarts the group because a machine asks to join it.
            os.environ[RESTART_CAUSE] = self._cause or "a machine joined the job"
            self._cause = None
            super()._restart_workers(worker_group)

    return RecordingAgent


def launch(arguments: list[str], environment: Mapping[str, str]) -> int:
    """Run torchrun with ``arguments`` in this process, its workers getting ``environment``; its exit status (130
    when a signal stopped it)."""
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher import api

    plain, before = api.LocalElasticAgent, dict(os.environ)
    # torchrun builds its agent by this name and takes no class of ours: the one place to hand it the recording one.
    api.LocalElasticAgent = _recording_agent(plain)
    os.environ.update({**environment, **UNSHARED_STORE})  # the agent's, and the workers' (they inherit it)
    try:
        torchrun.main(arguments)
    except ChildFailedError as exc:
        log.error("%s", exc.format_msg())
        return 1
    except SignalException as exc:
        log.warning("torchrun stopped its workers on %s", exc.sigval.name)
        return 130
    finally:
        api.LocalElasticAgent = plain
        os.environ.clear()
        os.environ.update(before)
    return 0


# --- the worker ----------------------------------------------------------------------------------------------


def warn_if_restarts_would_fail(env: DistEnv) -> None:
    """A torchrun allowed to restart, but sharing its store with the workers, cannot restart them (UNSHARED_STORE)."""
    if env.is_main and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True" and \
            int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0")) > 0:
        variable, value = next(iter(UNSHARED_STORE.items()))
        log.warning("torchrun shares its rendezvous store with the workers: a restart would fail to connect them "
                    "(pytorch/pytorch#135712); set %s=%s in torchrun's environment", variable, value)


def resume_point(folder: Path, requested: str | None, env: DistEnv) -> tuple[Path, dict[str, Any] | None] | None:
    """What this rank resumes from, decided by the main rank for all: the newest checkpoint of ``folder`` where
    this torchrun job wrote it (a restart); else ``requested`` (a path, or 'auto': the newest checkpoint). The
    main rank gets what it read with the path (None where it read nothing), the others load it themselves. The main
    rank logs a restart: when (the line's time), why (each agent's record of it) and where the job continues."""
    chosen = _choose(folder, requested) if env.is_main else None
    report = (os.environ.get(RESTART_CAUSE), int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")))
    reports: list[Any] = [report]
    if env.distributed:
        reports = [None] * env.world_size
        dist.all_gather_object(reports, report)
        shared = [str(chosen[0]) if chosen else None]
        dist.broadcast_object_list(shared, src=0)
        if not env.is_main:
            return (Path(shared[0]), None) if shared[0] else None
    if (chosen is not None and chosen[2]) or any(cause or count for cause, count in reports):
        causes = "; ".join(dict.fromkeys(cause for cause, _ in reports if cause)) or _NOT_RECORDED
        log.warning("torchrun job %s restarted its workers (restart %d of at most %s): %s. This attempt %s",
                    run_id(), max(count for _, count in reports), os.environ.get("TORCHELASTIC_MAX_RESTARTS", "?"),
                    causes, f"continues from {chosen[0]}" if chosen else "starts afresh: no checkpoint of the job")
    return chosen[:2] if chosen else None


def _choose(folder: Path, requested: str | None) -> tuple[Path, dict[str, Any] | None, bool] | None:
    """(path, what was read of it, whether it is this torchrun job's own), or None: start afresh."""
    job = run_id()
    newest = newest_loadable(folder, load_training_checkpoint) if job or requested == "auto" else None
    if newest is not None and job is not None and newest[1]["training"].get("run") == job:
        return (*newest, True)
    if requested == "auto":
        return (*newest, False) if newest else None
    return (Path(requested), None, False) if requested else None
