"""Which parameters the configured loss terms reach (what DDP must be told about), per classifier layout."""

from __future__ import annotations

import pytest
from small_model import MODEL

from qslr.model.losses import VACLoss
from qslr.model.network import build_model
from qslr.train.checkpointing import model_sections
from qslr.train.config import load_config
from qslr.train.loss_reach import parameters_without_loss

SMALL = MODEL


def unused_modules(weights: dict[str, float], shared: bool) -> set[str]:
    config = load_config("synthetic", [*SMALL, f"model.classifier.shared={str(shared).lower()}"])
    model = build_model(7, **model_sections(config))
    model.train()
    names = parameters_without_loss(model, VACLoss(weights, 8.0))
    assert model.training  # the probe runs in eval mode and gives the model back as it found it
    return {name.split(".")[0] for name in names}


@pytest.mark.parametrize(("weights", "shared", "expected"), [
    ({"SeqCTC": 1.0}, False, {"conv_classifier"}),  # VAC's baseline
    ({"SeqCTC": 1.0}, True, set()),  # one classifier, reached through the BiLSTM
    ({"SeqCTC": 1.0, "ConvCTC": 1.0}, False, set()),
    ({"ConvCTC": 1.0}, False, {"sequence", "classifier"}),
    # Dist teaches the convolutional branch from a detached BiLSTM: the teacher receives nothing through it.
    ({"Dist": 25.0}, False, {"sequence", "classifier"}),
    ({"SeqCTC": 1.0, "ConvCTC": 1.0, "Dist": 25.0}, False, set()),
])
def test_the_modules_no_loss_term_reaches(weights, shared, expected):
    assert unused_modules(weights, shared) == expected


def test_the_frame_encoder_and_frozen_parameters_are_not_reported():
    config = load_config("synthetic", [*SMALL, "model.classifier.shared=false"])
    model = build_model(7, **model_sections(config))
    model.conv_classifier.requires_grad_(False)
    names = parameters_without_loss(model, VACLoss({"SeqCTC": 1.0}, 8.0))
    assert names == []
