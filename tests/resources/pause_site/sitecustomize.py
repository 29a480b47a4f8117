"""Holds one rank of a test's torchrun job after an optimiser step, until the test kills it: a kill that lands at a
known step however fast the machine runs (on a quiet one the tests' 8-step job is over in a second, before a test
that waited for a log line could kill anything).

On PYTHONPATH, Python imports this module at every start-up. It acts only in a torchrun worker of the job's first
attempt (RANK set, TORCHELASTIC_RESTART_COUNT 0) when QSLR_PAUSE_AFTER_STEP is `RANK:STEP` (RANK may be `*`: any
rank of this launcher), and only once qslr.train.trainer is imported: other processes (launchers, loader workers)
are left as they are. The held rank prints `paused after step STEP` and sleeps.
"""

import importlib.abc
import importlib.util
import os
import sys
import time


def _hold(trainer_class, step: int) -> None:
    optimiser_step = trainer_class._optimiser_step

    def step_then_hold(self):
        optimiser_step(self)
        if self.global_step == step:
            print(f"[rank {os.getpid()}] paused after step {step}", file=sys.stderr, flush=True)
            time.sleep(3600)

    trainer_class._optimiser_step = step_then_hold


class _HoldWhenTrainerLoads(importlib.abc.MetaPathFinder):
    def __init__(self, step: int):
        self.step = step

    def find_spec(self, name, path=None, target=None):
        if name != "qslr.train.trainer":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            _hold(module.Trainer, self.step)

        spec.loader.exec_module = exec_module
        return spec


def _install() -> None:
    wanted = os.environ.get("QSLR_PAUSE_AFTER_STEP")
    if not wanted or "RANK" not in os.environ or os.environ.get("TORCHELASTIC_RESTART_COUNT") != "0":
        return
    rank, step = wanted.split(":")
    if rank in ("*", os.environ["RANK"]):
        sys.meta_path.insert(0, _HoldWhenTrainerLoads(int(step)))


_install()
