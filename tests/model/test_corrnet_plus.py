"""CorrNet+ against its original's arithmetic (tests/model/original_forms.py: Unfold windows, PyTorch's multi-head
attention, einsum affinities, InstanceNorm1d, the lifting pools on whole tensors), run on one clip at a time: an
original checkpoint (its key names, "module." prefixes, 3D kernels of temporal size 1, the parameters its forward
never reads) imports, and a padded batch gives each clip the original's logits for that clip alone, on both branches,
with the lifting pools' loss terms; batch independence, training reach and the errors of a file that does not fit.

Narrowed to keep it fast: the ResNet at width 16 (every module kept), the temporal CNN and the BiLSTM 64 wide.
"""

from __future__ import annotations

import logging

import pytest
import torch
from click.testing import CliRunner
from original_forms import CorrNetPlusNetwork, clips, randomised

from qslr.model import vac_import
from qslr.model.checkpoints import CheckpointError
from qslr.model.corrnet_plus import corrnet_plus_encoder
from qslr.model.losses import VACLoss
from qslr.model.network import build_model
from qslr.tools.cli import cli

CLASSES, WIDTH, HIDDEN = 12, 16, 64
# QSLR's padded lengths (ceil(L / 4) * 4 + 12): 6, 2 and 4 output steps. A clip of 16 frames (1 step) the original
# refuses: its InstanceNorm1d needs more than one step.
LENGTHS = [36, 20, 28]
SIZE = 48  # frames: maps of 6, 3 and 2 positions a side after stages 2, 3 and 4
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    """(the original network with random weights, its checkpoint as the original saves it under DataParallel)."""
    network = randomised(CorrNetPlusNetwork(CLASSES, WIDTH, HIDDEN))
    path = tmp_path_factory.mktemp("corrnet-plus") / "corrnet_plus.pt"
    torch.save({"model_state_dict": {f"module.{k}": v for k, v in network.state_dict().items()}}, path)
    return network, path


@pytest.fixture()
def narrow_original(monkeypatch):
    """The import builds the temporal CNN and BiLSTM as wide as the test's original (1024 in the real one)."""
    monkeypatch.setitem(vac_import.ORIGINAL_SECTIONS, "temporal", {"kernels": ["K5", "P2", "K5", "P2"],
                                                                   "hidden_size": HIDDEN})
    monkeypatch.setitem(vac_import.ORIGINAL_SECTIONS, "sequence", {"hidden_size": HIDDEN, "num_layers": 2,
                                                                   "dropout": 0.3})


def test_an_original_checkpoint_imports_as_corrnet_plus(original, narrow_original, tmp_path, caplog):
    _, path = original
    with caplog.at_level(logging.INFO, logger="qslr.model.vac_import"):
        _, sections = vac_import.import_vac(path)
    assert sections["frame_encoder"] == {"arch": "corrnet_plus_resnet18", "weights": None,
                                         "options": {"stages": [2, 3, 4], "width": WIDTH}}
    assert sections["temporal"]["pooling"] == "lift"
    assert sections["classifier"] == {"weight_norm": True, "shared": True}
    # What the original's forward never reads is left out, and said so.
    assert "left out 15 parameters" in caplog.text and "conv2d.corr4.mlp.2.bias" in caplog.text
    result = CliRunner().invoke(cli, ["model", "import-vac", str(path), "--out", str(tmp_path / "ours.pt")])
    assert result.exit_code == 0, result.output
    assert "CorrNet+ (correlations after stages [2, 3, 4]), SMKD" in result.output and "lifting pools" in result.output


def test_each_clip_of_a_padded_batch_gets_the_original_s_logits_for_it_alone(original, narrow_original):
    network, path = original
    model, _ = vac_import.import_vac(path)
    model.eval()
    videos, lengths = clips(LENGTHS, SIZE)
    with torch.no_grad():
        # The original itself, run on the batch with its own padding (each clip's last frame repeated), does not
        # give the shorter clips their own logits; QSLR's model does (below).
        ours = model(videos, lengths)
        padded = torch.stack([torch.cat([v[:n], v[n - 1:n].expand(len(v) - n, -1, -1, -1)]) for v, n in
                              zip(videos, LENGTHS, strict=True)])
        batched = network(padded)[0]
        moved = [(batched[i, :n] - ours.conv_logits[i, :n]).abs().max() for i, n in enumerate(ours.lengths.tolist())]
        assert moved[0] < 2e-3 and min(moved[1:]) > 1, moved  # float32's rounding on logits of about 20

        # In float64, where the two forms agree to rounding, but for the BiLSTM, which computes in float32 always.
        model.double().sequence.float()
        network.double()
        videos = videos.double()
        visual, steps, lifting = model.temporal(model.encode_frames(videos, lengths).transpose(1, 2), lengths)
        visual = visual.transpose(1, 2)
        conv_logits = model.conv_classifier(visual)
        sequence_logits = model.classifier(model.sequence(visual, steps).double())
        squares = 0
        for i, n in enumerate(LENGTHS):
            conv, sequence, updates, predictions = network(videos[i:i + 1, :n])
            assert int(steps[i]) == conv.shape[1] == n // 4 - 3
            assert (conv_logits[i, :int(steps[i])] - conv[0]).abs().max() < 1e-9, i
            assert (sequence_logits[i, :int(steps[i])] - sequence[0]).abs().max() < TOLERANCE, i
            squares = squares + torch.stack([updates, predictions]) ** 2  # (term, pool)
    # Each pool's norm is over all the batch's clips' own steps: the clips' norms alone, added in squares; the terms
    # add up the pools'.
    assert torch.allclose(torch.stack([lifting["Cu"], lifting["Cp"]]), squares.sqrt().sum(1), rtol=1e-9)
    network.float()


def test_what_follows_a_clip_never_reaches_it_and_its_own_frames_all_do():
    torch.manual_seed(0)
    encoder = randomised(corrnet_plus_encoder(width=WIDTH)).double()
    videos, lengths = clips(LENGTHS, SIZE)
    videos = videos.double()
    with torch.no_grad():
        got = encoder(videos.flatten(0, 1), lengths).reshape(*videos.shape[:2], -1)
        changed = videos.clone()
        changed[1, 20:] = torch.randn_like(changed[1, 20:]) * 10
        changed[2, 0] = -changed[2, 0]
        again = encoder(changed.flatten(0, 1), lengths).reshape(*videos.shape[:2], -1)
    assert torch.equal(again[1, :20], got[1, :20])
    # A frame reaches the 4 frames on each side of its (9, 3, 3) convolutions and more through the rest.
    assert (again[2, 1:12] - got[2, 1:12]).abs().amax(-1).min() > 0
    assert torch.equal(again[0], got[0])


def test_training_sees_only_the_clips_frames_and_every_parameter_learns():
    torch.manual_seed(0)
    model = build_model(CLASSES, {"arch": "corrnet_plus_resnet18", "weights": None, "options": {"width": WIDTH}},
                        {"hidden_size": 32, "pooling": "lift"}, {"hidden_size": 32},
                        {"weight_norm": True, "shared": True}).train()
    encoder = model.frame_encoder
    with torch.no_grad():  # the gates (alpha) and the lifting pools' convolutions start at 0, where what they
        for parameter in model.parameters():  # multiply gets no gradient
            if not parameter.any():
                parameter.normal_(0.0, 0.1)
    videos, lengths = clips([28, 20], SIZE)
    noisy = videos.clone()
    noisy[1, 20:] = torch.randn_like(noisy[1, 20:]) * 100  # padding: BatchNorm's batch statistics must not see it
    first = encoder(videos.flatten(0, 1), lengths).reshape(2, 28, -1)
    second = encoder(noisy.flatten(0, 1), lengths).reshape(2, 28, -1)
    assert torch.allclose(first[0], second[0], atol=1e-5) and torch.allclose(first[1, :20], second[1, :20], atol=1e-5)
    loss = VACLoss({"SeqCTC": 1.0, "ConvCTC": 1.0, "Dist": 25.0, "Cu": 5e-4, "Cp": 5e-4})
    result = loss(model(videos, lengths), torch.tensor([1, 2, 3, 4]), torch.tensor([2, 2]))
    assert set(result.terms) == {"SeqCTC", "ConvCTC", "Dist", "Cu", "Cp"}
    result.total.backward()
    silent = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert silent == []


def test_a_file_missing_a_lifting_weight_names_it_by_the_original_s_name(original, narrow_original, tmp_path):
    _, path = original
    state = torch.load(path)["model_state_dict"]
    del state["module.conv1d.temporal_conv.3.updater.2.weight"]
    broken = tmp_path / "broken.pt"
    torch.save({"model_state_dict": state}, broken)
    with pytest.raises(CheckpointError, match=r"missing conv1d\.temporal_conv\.3\.updater\.2\.weight"):
        vac_import.import_vac(broken)
