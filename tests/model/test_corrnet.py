"""CorrNet's frame encoder against a reference written in the original's form (3D convolutions of temporal size 1,
einsum affinities, one clip at a time), with the original's parameter names; batch independence and length
exactness; the import of a checkpoint with the original's key layout; training steps and the ONNX export."""

from __future__ import annotations

import pytest
import torch
from original_forms import ResNet3d, clips, randomised
from torch import nn

from qslr.model import vac_import
from qslr.model.checkpoints import CheckpointError
from qslr.model.corrnet import CorrNetEncoder, corrnet_encoder
from qslr.model.network import build_model
from qslr.model.vac_import import ORIGINAL_SECTIONS, corrnet_encoder_state, import_vac, to_original_key

# Compared in float64: with random weights the activations reach several hundred, where float32's rounding of two
# orders of summation differs by up to 1e-1; in float64 the two forms agree to 1e-10.
TOLERANCE = 1e-4


class _ReferenceCorrelation(nn.Module):
    """The original's identification and correlation arithmetic for one clip (B=1), edges as it handles them."""

    def __init__(self, channels: int):
        super().__init__()
        reduced = channels // 16
        self.down_conv = nn.Conv3d(channels, reduced, 1, bias=False)
        self.down_conv2 = nn.Conv3d(channels, channels, 1, bias=False)
        for i, d in enumerate((1, 2, 3), start=1):
            setattr(self, f"spatial_aggregation{i}",
                    nn.Conv3d(reduced, reduced, (9, 3, 3), padding=(4, d, d), dilation=(1, d, d), groups=reduced))
        self.weights = nn.Parameter(torch.rand(3))
        self.weights2 = nn.Parameter(torch.rand(2))
        self.conv_back = nn.Conv3d(reduced, channels, 1, bias=False)

    def forward(self, x):
        x2 = self.down_conv2(x)
        after = torch.cat([x2[:, :, 1:], x2[:, :, -1:]], 2)
        before = torch.cat([x2[:, :, :1], x2[:, :, :-1]], 2)
        features = sum(
            torch.einsum("bctsd,bthwsd->bcthw", other,
                         torch.sigmoid(torch.einsum("bcthw,bctsd->bthwsd", x, other)) - 0.5) * weight
            for other, weight in ((after, self.weights2[0]), (before, self.weights2[1])))
        reduced = self.down_conv(x)
        aggregated = sum(getattr(self, f"spatial_aggregation{i}")(reduced) * self.weights[i - 1] for i in (1, 2, 3))
        return features * (torch.sigmoid(self.conv_back(aggregated)) - 0.5)


class _ReferenceResNet3d(ResNet3d):
    """The original's ResNet-18 layout (``conv2d.*`` in its checkpoints) with correlations after ``stages``."""

    def __init__(self, stages=(2, 3, 4)):
        super().__init__()
        self.stages = stages
        for stage in stages:
            setattr(self, f"corr{stage - 1}", _ReferenceCorrelation(self.widths[stage - 1]))
        self.alpha = nn.Parameter(torch.rand(len(stages)))

    def after_stage(self, stage, x):
        if stage not in self.stages:
            return x
        return x + getattr(self, f"corr{stage - 1}")(x) * self.alpha[self.stages.index(stage)]


def _reference_features(reference: _ReferenceResNet3d, clip: torch.Tensor) -> torch.Tensor:
    """(T, 3, H, W) -> the original's (T, 512) features of the clip alone."""
    return reference(clip.transpose(0, 1)[None])[0].t()


def _original_encoder_state(reference: _ReferenceResNet3d) -> dict[str, torch.Tensor]:
    return {f"conv2d.{k}": v for k, v in reference.state_dict().items()}


def _encoder_from_original(reference: _ReferenceResNet3d) -> CorrNetEncoder:
    encoder = corrnet_encoder(stages=reference.stages).eval()
    encoder.load_state_dict(corrnet_encoder_state(_original_encoder_state(reference)))
    return encoder


STAGES = pytest.mark.parametrize("stages", [(2, 3, 4), (3, 4)], ids=["phoenix", "csl-daily"])


@STAGES
@pytest.mark.slow
def test_a_padded_batch_equals_the_original_form_run_on_each_clip_alone(stages):
    reference = randomised(_ReferenceResNet3d(stages))
    encoder = _encoder_from_original(reference).double()
    reference.double()
    videos, lengths = clips([13, 6, 9, 1])
    videos = videos.double()
    with torch.no_grad():
        got = encoder(videos.flatten(0, 1), lengths).reshape(*videos.shape[:2], -1)
        for i, n in enumerate(lengths.tolist()):
            expected = _reference_features(reference, videos[i, :n])
            assert (got[i, :n] - expected).abs().max() < TOLERANCE, i
        # What follows a clip in the batch does not reach it, and its own frames all do: every frame of a clip
        # changes the correlations of the others.
        changed = videos.clone()
        changed[1, 6:] = torch.randn_like(changed[1, 6:]) * 10
        changed[2, 0] = -changed[2, 0]
        again = encoder(changed.flatten(0, 1), lengths).reshape(*videos.shape[:2], -1)
    assert torch.equal(again[1, :6], got[1, :6])
    assert (again[2, 1:9] - got[2, 1:9]).abs().amax(-1).min() > 0


def test_training_sees_only_the_clips_frames_and_reaches_every_parameter():
    torch.manual_seed(0)
    encoder = corrnet_encoder(stages=(2, 3, 4)).train()
    with torch.no_grad():
        encoder.alpha.fill_(0.5)  # at its initial 0 the correlations' own weights get no gradient
    videos, lengths = clips([8, 5])
    noisy = videos.clone()
    noisy[1, 5:] = torch.randn_like(noisy[1, 5:]) * 100  # padding: BatchNorm's batch statistics must not see it
    first = encoder(videos.flatten(0, 1), lengths).reshape(2, 8, -1)
    second = encoder(noisy.flatten(0, 1), lengths).reshape(2, 8, -1)
    assert torch.allclose(first[0], second[0], atol=1e-5) and torch.allclose(first[1, :5], second[1, :5], atol=1e-5)
    (first[0].sum() + first[1, :5].sum()).backward()
    silent = [name for name, p in encoder.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert silent == []


def _original_checkpoint(tmp_path, stages, num_classes=12):
    """A CorrNet checkpoint as the original writes it: its key names and shapes (3D ResNet kernels of temporal size
    1, the correlations and alpha beside them), the network wrapped by DataParallel ("module." before every key),
    SMKD's shared weight-normalised classifier stored (in, out)."""
    reference = randomised(_ReferenceResNet3d(stages))
    sections = {**ORIGINAL_SECTIONS, "classifier": {"weight_norm": True, "shared": True}}
    sections["temporal"] = {**sections["temporal"], "hidden_size": 64}
    sections["sequence"] = {**sections["sequence"], "hidden_size": 64}
    rest = randomised(build_model(num_classes, **sections))
    state = {to_original_key(k): v for k, v in rest.state_dict().items() if not k.startswith("frame_encoder.")}
    state.update(_original_encoder_state(reference))
    path = tmp_path / "corrnet.pt"
    torch.save({"model_state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    return path, reference, rest


@STAGES
def test_a_checkpoint_with_the_original_keys_imports_and_equals_the_original_form(tmp_path, stages, monkeypatch):
    # The original's temporal CNN and BiLSTM are 1024 wide; they are narrowed here, in the file and in what the
    # import builds, to keep the test fast. The CorrNet encoder is full size.
    monkeypatch.setitem(vac_import.ORIGINAL_SECTIONS, "temporal", {"kernels": ["K5", "P2", "K5", "P2"],
                                                                   "hidden_size": 64})
    monkeypatch.setitem(vac_import.ORIGINAL_SECTIONS, "sequence", {"hidden_size": 64, "num_layers": 2,
                                                                   "dropout": 0.3})
    path, reference, rest = _original_checkpoint(tmp_path, stages)
    model, sections = import_vac(path)
    assert sections["frame_encoder"] == {"arch": "corrnet_resnet18", "weights": None,
                                         "options": {"stages": list(stages)}}
    model.eval().double()
    reference.double()
    videos, lengths = clips([24, 17])
    videos = videos.double()
    with torch.no_grad():
        framewise = model.encode_frames(videos, lengths)
        for i, n in enumerate(lengths.tolist()):
            expected = _reference_features(reference, videos[i, :n])
            assert (framewise[i, :n] - expected).abs().max() < TOLERANCE
        assert not framewise[1, 17:].any()
        # The rest of the network is VAC's, loaded as a VAC checkpoint is.
        # (in float32: the BiLSTM computes in it whatever it is given).
        framewise = framewise.float()
        ours = model.float().forward_features(framewise, lengths).sequence_logits
        theirs = rest.float().eval().forward_features(framewise, lengths).sequence_logits
    assert (ours - theirs).abs().max() < TOLERANCE


def test_a_checkpoint_missing_a_correlation_weight_names_it(tmp_path):
    path, _, _ = _original_checkpoint(tmp_path, (3, 4))
    data = torch.load(path)
    del data["model_state_dict"]["module.conv2d.corr2.conv_back.weight"]
    torch.save(data, path)
    with pytest.raises(CheckpointError, match="conv2d.corr2.conv_back.weight"):
        import_vac(path)
