"""The network: shapes, valid-frame-only encoding, batch independence, sizes, encoder weights."""

from __future__ import annotations

import pytest
import torch
import torchvision

from qslr.model.encoder_registry import build_frame_encoder
from qslr.model.frame_encoders import WeightsUnavailableError, cached_weights_file
from qslr.model.network import build_model
from qslr.pipelines.temporal_padding import padded_length

VAC = ["K5", "P2", "K5", "P2"]
SMALL = {
    "frame_encoder": {"arch": "tiny_cnn", "weights": None, "options": {"channels": [4, 8], "out_dim": 16}},
    "temporal": {"kernels": VAC, "hidden_size": 24},
    "sequence": {"hidden_size": 20, "num_layers": 2, "dropout": 0.0},
}


def small_model(weight_norm=False, shared=False, classes=9, residual=False):
    torch.manual_seed(0)
    temporal = {**SMALL["temporal"], "hidden_size": 20} if shared or residual else SMALL["temporal"]
    return build_model(classes, SMALL["frame_encoder"], temporal, {**SMALL["sequence"], "residual": residual},
                       {"weight_norm": weight_norm, "shared": shared}).eval()


def test_output_shapes_and_lengths():
    model = small_model()
    lengths = torch.tensor([padded_length(n, VAC) for n in (30, 17)])
    out = model(torch.randn(2, int(lengths.max()), 3, 32, 32), lengths)
    assert out.framewise.shape == (2, int(lengths.max()), 16)
    assert out.sequence_logits.shape == out.conv_logits.shape == (2, 8, 9)
    assert out.lengths.tolist() == [8, 5]
    assert torch.all(out.framewise[1, int(lengths[1]):] == 0)


def test_the_cnn_sees_only_valid_frames():
    model = small_model()
    seen = []
    model.frame_encoder.register_forward_hook(lambda module, args, output: seen.append(args[0].shape[0]))
    lengths = torch.tensor([28, 20, 16])
    model(torch.randn(3, 28, 3, 32, 32), lengths)
    assert seen == [64]


@pytest.mark.parametrize("weight_norm, shared, residual",
                         [(False, False, False), (True, False, False), (True, True, False), (True, True, True)])
def test_each_sample_decodes_the_same_alone_or_in_a_batch(weight_norm, shared, residual):
    model = small_model(weight_norm, shared, residual=residual)
    lengths = [padded_length(n, VAC) for n in (41, 9, 23)]
    videos = [torch.randn(n, 3, 32, 32) for n in lengths]
    batch = torch.zeros(3, max(lengths), 3, 32, 32)
    for i, video in enumerate(videos):
        batch[i, : len(video)] = video
    with torch.no_grad():
        together = model(batch, torch.tensor(lengths))
        for i, video in enumerate(videos):
            alone = model(video[None], torch.tensor([len(video)]))
            steps = int(alone.lengths[0])
            torch.testing.assert_close(together.sequence_logits[i, :steps], alone.sequence_logits[0], atol=1e-5,
                                       rtol=1e-5)
            torch.testing.assert_close(together.conv_logits[i, :steps], alone.conv_logits[0], atol=1e-5, rtol=1e-5)


def test_a_residual_sequence_branch_starts_from_the_visual_one():
    # With the recurrence silenced (every LSTM weight and bias 0: each output is 0.5 * tanh(0)), a residual
    # BiLSTM passes its input through, so with a shared classifier both branches give the same logits.
    model = small_model(weight_norm=True, shared=True, residual=True)
    lengths = torch.tensor([padded_length(n, VAC) for n in (30, 17)])
    videos = torch.randn(2, int(lengths.max()), 3, 32, 32)
    with torch.no_grad():
        before = model(videos, lengths)
        for parameter in model.sequence.rnn.parameters():
            parameter.zero_()
        silenced = model(videos, lengths)
    assert not torch.allclose(before.sequence_logits, before.conv_logits, atol=1e-3)
    for i, steps in enumerate(silenced.lengths.tolist()):
        torch.testing.assert_close(silenced.sequence_logits[i, :steps], silenced.conv_logits[i, :steps])


def test_a_residual_bilstm_needs_equal_widths():
    with pytest.raises(ValueError, match="residual BiLSTM needs its input as wide as its output"):
        build_model(9, SMALL["frame_encoder"], SMALL["temporal"], {**SMALL["sequence"], "residual": True},
                    {"weight_norm": True})


def test_shared_classifier_is_one_module():
    model = small_model(weight_norm=True, shared=True)
    assert model.conv_classifier is model.classifier
    assert model.classifier.weight.shape == (20, 9)  # (in, out), as the original stores it


def test_original_sizes():
    for classifier, millions in (({"weight_norm": False, "shared": False}, 34.30),
                                 ({"weight_norm": True, "shared": True}, 32.97)):
        model = build_model(1296, {"arch": "resnet18", "weights": None}, {}, {}, classifier)
        assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == millions


def test_bad_weights_and_options_are_clear_errors(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(WeightsUnavailableError, match="unknown weights 'IMAGENET9K'"):
        build_frame_encoder("resnet18", "IMAGENET9K")
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        build_frame_encoder("resnet18", str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="unknown frame encoder 'vgg'"):
        build_frame_encoder("vgg")
    with pytest.raises(ValueError, match="bad options"):
        build_frame_encoder("tiny_cnn", options={"width": 3})


def test_imagenet_weights_load_from_torchvisions_cache(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    reference = torchvision.models.resnet18()
    target = cached_weights_file(torchvision.models.ResNet18_Weights.IMAGENET1K_V1)
    target.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), target)
    # torchvision takes a cached file as it is (it checks hashes only when it downloads).
    for weights in ("IMAGENET1K_V1", str(target)):
        encoder = build_frame_encoder("resnet18", weights)
        torch.testing.assert_close(encoder.trunk.conv1.weight, reference.conv1.weight)
        assert encoder.out_dim == 512


@pytest.mark.parametrize("arch", ["resnet18", "resnet34", "corrnet_resnet18", "corrnet_plus_resnet18"])
def test_a_narrow_resnet_keeps_every_block_and_stride_at_a_fraction_of_the_channels(arch):
    full = build_frame_encoder(arch)
    narrow = build_frame_encoder(arch, options={"width": 16})
    layout = [(type(m).__name__, getattr(m, "stride", None), getattr(m, "kernel_size", None))
              for m in full.trunk.modules()]
    assert [(type(m).__name__, getattr(m, "stride", None), getattr(m, "kernel_size", None))
            for m in narrow.trunk.modules()] == layout
    assert (full.out_dim, narrow.out_dim) == (512, 128)
    widths = [m.out_channels for m in narrow.trunk.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [w * 4 for w in widths] == [m.out_channels for m in full.trunk.modules() if isinstance(m, torch.nn.Conv2d)]
    frames = torch.randn(3, 3, 64, 64)
    assert narrow.eval()(frames).shape == (3, 128)
    # He initialisation, as torchvision gives its own layers: not PyTorch's default for a rebuilt convolution.
    assert narrow.trunk.layer3[0].conv1.weight.std().item() == pytest.approx((2 / (64 * 9)) ** 0.5, rel=0.15)


def test_a_narrow_resnet_refuses_imagenet_weights():
    with pytest.raises(ValueError, match="pretrained weights are for width 64, not 16"):
        build_frame_encoder("resnet18", "IMAGENET1K_V1", {"width": 16})
    with pytest.raises(ValueError, match="fewer than the 16"):
        build_frame_encoder("corrnet_resnet18", options={"width": 4, "stages": [2, 3, 4]})
    with pytest.raises(ValueError, match="fewer than the 16"):
        build_frame_encoder("corrnet_plus_resnet18", options={"width": 4})
