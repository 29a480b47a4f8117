"""`qslr bench gpu-check` on a GPU machine with PyTorch and CUDA: the parts that need nothing more are proven.

Without a GPU, tests/tools/test_bench.py checks that every part is not proven and the command fails.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from qslr.tools.cli import cli

PYTORCH_ONLY = ("train-bf16", "inference", "torch-export", "train-fp16")


@pytest.mark.gpu
@pytest.mark.timeout(900)
def test_gpu_check_proves_what_pytorch_with_cuda_can(tmp_path):
    out = tmp_path / "gpu.json"
    asked = [argument for part in (*PYTORCH_ONLY, "resume") for argument in ("--only", part)]
    result = CliRunner().invoke(cli, ["bench", "gpu-check", "--out", str(out), "--videos", "40", "--steps", "12",
                                      *asked])
    parts = {part["part"]: part for part in json.loads(out.read_text())["parts"]}
    assert list(parts) == [*PYTORCH_ONLY, "resume"]
    for name in PYTORCH_ONLY:
        assert parts[name]["status"] == "proven", (name, parts[name]["reason"])
    for name in ("inference", "torch-export"):
        comparisons = parts[name]["details"]
        assert set(comparisons) == {"fp32", "fp16"}
        assert all(c["max_difference"] <= c["tolerance"] for c in comparisons.values())
    assert parts["train-fp16"]["details"]["grad_scale"] > 0
    # Exact resume is proven, or not proven where this GPU's kernels do not repeat themselves; never failed.
    resume = parts["resume"]
    assert resume["status"] == "proven" or resume["reason"].startswith("CUDA kernels here do not repeat"), resume
    assert result.exit_code == (0 if resume["status"] == "proven" else 3), result.output
