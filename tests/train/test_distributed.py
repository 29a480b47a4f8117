"""The wait for dev scoring has its own timeout, apart from the one that catches a dead rank."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tests" / "resources" / "slow_main_rank.py"


@pytest.mark.timeout(180)
@pytest.mark.slow
def test_ranks_wait_for_scoring_longer_than_the_collective_timeout():
    # A 3-second collective timeout, and a main rank busy for 8 seconds before the evaluation barrier.
    environment = {**os.environ, "QSLR_COLLECTIVE_TIMEOUT_MIN": "0.05", "QSLR_EVALUATION_TIMEOUT_MIN": "2"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(SCRIPT), "8"]
    done = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=150)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "rank 0 waited; all_reduce gave 2" in output and "rank 1 waited; all_reduce gave 2" in output
