"""Shared fixtures, made once per test session: tiny synthetic corpora and a small trained checkpoint."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from small_model import DDP_RUN, SMALL_MODEL

from qslr.pipelines.synthetic.generator import generate_corpus
from qslr.pipelines.synthetic.spec import SynthSpec
from qslr.train.config import load_config
from qslr.train.trainer import train


def _missing(packages: tuple[str, ...]) -> list[str]:
    """What a GPU test needs and this machine lacks: a CUDA GPU, then each package that does not import."""
    lacking = [] if torch.cuda.is_available() else ["a CUDA GPU"]
    return lacking + [name for name in packages if importlib.util.find_spec(name) is None]


def pytest_collection_modifyitems(config, items):
    """``@pytest.mark.gpu(*packages)``: runs where a CUDA GPU and those packages are, skipped with what is missing
    elsewhere. ``@pytest.mark.not_on_gpu(*packages)``: checks what a command says without them, so it is skipped
    where all are present (the GPU test runs the real thing there)."""
    for item in items:
        needs = item.get_closest_marker("gpu")
        if needs is not None and (missing := _missing(needs.args)):
            item.add_marker(pytest.mark.skip(reason=f"needs {' and '.join(missing)}, absent here"))
        without = item.get_closest_marker("not_on_gpu")
        if without is not None and not _missing(without.args):
            present = " and ".join(("a CUDA GPU", *without.args))
            item.add_marker(pytest.mark.skip(reason=f"{present} are present here: the GPU tests run instead"))


# Served repositories, servers and graphs of the session checkpoint, for every folder's tests (the benchmarks' too).
pytest_plugins = ["served_fixtures"]

TINY = SynthSpec(
    videos=12, vocab=8, signers=5, heldout_signers=2, min_glosses=2, max_glosses=4,
    dev_fraction=0.2, test_fraction=0.2, seed=3,
)


@pytest.fixture(scope="session")
def tiny_spec() -> SynthSpec:
    return TINY


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> tuple[Path, Path]:
    """(prepared dataset, raw Phoenix-layout root) of the same tiny corpus."""
    root = tmp_path_factory.mktemp("corpus")
    generate_corpus(TINY, root / "prepared", workers=2, phoenix_raw_out=root / "raw", show_progress=False)
    return root / "prepared", root / "raw"


RAW_SMALL = SynthSpec(
    videos=6, vocab=6, signers=4, heldout_signers=1, min_glosses=2, max_glosses=3,
    dev_fraction=0.2, test_fraction=0.2, noise=0.0, seed=11,
)


@pytest.fixture(scope="session")
def raw_phoenix(tmp_path_factory) -> tuple[Path, Path]:
    """(synthetic prepared dataset, the same corpus in the raw Phoenix-2014 layout), small and noise-free
    so that tests can copy and damage the raw one cheaply."""
    root = tmp_path_factory.mktemp("raw-phoenix")
    generate_corpus(RAW_SMALL, root / "prepared", workers=2, phoenix_raw_out=root / "raw", show_progress=False)
    return root / "prepared", root / "raw"


@pytest.fixture(scope="session")
def checkpoint(tiny_corpus, tmp_path_factory) -> Path:
    """A small model trained for one epoch on the tiny corpus."""
    work = tmp_path_factory.mktemp("deploy-run")
    train(load_config("synthetic", [f"data.root={tiny_corpus[0]}", f"train.work_dir={work}", "train.epochs=1",
                                    *SMALL_MODEL]))
    return work / "checkpoints" / "last.pt"


@pytest.fixture(scope="session")
def ddp_straight_run(tiny_corpus, tmp_path_factory) -> tuple[str, Path]:
    """Two gloo ranks trained for two epochs by `qslr train --nproc 2` without a stop (small_model.DDP_RUN), once
    for the session: (its output, its work_dir)."""
    work = tmp_path_factory.mktemp("ddp-straight")
    done = subprocess.run([sys.executable, "-m", "qslr.tools.cli", "train", "--nproc", "2", "--config", "synthetic",
                           f"data.root={tiny_corpus[0]}", f"train.work_dir={work}", *DDP_RUN],
                          cwd=Path(__file__).parents[1], capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output, work


@pytest.fixture(scope="session")
def escaped_mutants() -> list[Path]:
    """Damaged videos that once escaped per-upload isolation (found by fuzzing), kept as fixed regression cases."""
    return sorted((Path(__file__).parent / "resources" / "escaped_mutants").iterdir())


@pytest.fixture(scope="session")
def small_model() -> list[str]:
    """Config overrides that shrink the `synthetic` preset's model for quick runs."""
    return list(SMALL_MODEL)
