"""A small trained checkpoint for the export and serving tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from train.config import load_config
from train.trainer import train

SMALL_MODEL = ["model.frame_encoder.options={channels: [4, 8, 8], out_dim: 32}", "model.temporal.hidden_size=24",
               "model.sequence.hidden_size=24", "data.batch_size=2", "data.num_workers=1"]


@pytest.fixture(scope="session")
def checkpoint(tiny_corpus, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("deploy-run")
    train(load_config("synthetic", [f"data.root={tiny_corpus[0]}", f"train.work_dir={work}", "train.epochs=1",
                                    *SMALL_MODEL]))
    return work / "checkpoints" / "last.pt"
