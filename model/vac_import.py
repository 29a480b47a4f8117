"""Loading checkpoints of the original VAC code (VIPL-SLP/VAC_CSLR), and of CorrNet (hulianyuyy/CorrNet, built on
it), into QSLR's network.

The original's state dict (docs/original_vac.md, "Checkpoints of the original") names the parts conv2d
(ResNet-18 without fc), conv1d (TemporalConv, with its classifier as conv1d.fc), temporal_model (the BiLSTM)
and classifier; under
DataParallel the ResNet's keys carry an extra ``.module``. The weight-normalised classifier stores its
weight as (in, out), the transpose of nn.Linear, and QSLR's NormLinear keeps that orientation.
"""

from __future__ import annotations

from pathlib import Path

import torch

from qslr.model.checkpoints import CheckpointError, load_file, load_state_dict_strict
from qslr.model.network import SLRModel, build_model

# The original architecture (docs/original_vac.md); only the classifier differs between the presets.
ORIGINAL_SECTIONS = {
    "frame_encoder": {"arch": "resnet18", "weights": None, "options": {}},
    "temporal": {"kernels": ["K5", "P2", "K5", "P2"], "hidden_size": 1024},
    "sequence": {"hidden_size": 1024, "num_layers": 2, "dropout": 0.3},
}
# (original prefix, QSLR prefix), the first that matches applies. CorrNet's correlation modules and their weights
# sit beside the ResNet's stages in its conv2d; QSLR's CorrNet encoder keeps them beside its trunk, by their names.
_PREFIXES = (
    ("conv2d.corr", "frame_encoder.corr"),
    ("conv2d.alpha", "frame_encoder.alpha"),
    ("conv2d.", "frame_encoder.trunk."),
    ("conv1d.temporal_conv.", "temporal.temporal_conv."),
    ("conv1d.fc.", "conv_classifier."),
    ("temporal_model.rnn.", "sequence.rnn."),
    ("classifier.", "classifier."),
)


def _swap_prefix(key: str, source: int) -> str:
    for pair in _PREFIXES:
        if key.startswith(pair[source]):
            return pair[1 - source] + key[len(pair[source]):]
    return key  # no known prefix: reported as unexpected by the strict load


def to_qslr_key(original: str) -> str:
    return _swap_prefix(original, 0)


def to_original_key(ours: str) -> str:
    return _swap_prefix(ours, 1)


def corrnet_stages(state: dict[str, torch.Tensor]) -> list[int]:
    """The ResNet stages a CorrNet checkpoint has correlation modules after (corr1 follows stage 2); none for VAC."""
    return sorted({int(key.split(".")[1][len("corr"):]) + 1 for key in state if key.startswith("conv2d.corr")})


def qslr_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The original's state dict under QSLR's names. CorrNet writes its ResNet with 3D convolutions of temporal
    size 1: their (out, in, 1, k, k) kernels are the per-frame 2D kernels QSLR's trunk holds."""
    ours = {}
    for key, value in state.items():
        name = to_qslr_key(key)
        if name.startswith("frame_encoder.trunk.") and value.ndim == 5 and value.shape[2] == 1:
            value = value.squeeze(2)
        ours[name] = value
    return ours


def corrnet_encoder_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The frame encoder's part of `qslr_state`, under the encoder's own names."""
    return {key.removeprefix("frame_encoder."): value for key, value in qslr_state(state).items()
            if key.startswith("frame_encoder.")}


def original_state_dict(data: dict) -> dict[str, torch.Tensor]:
    state = data.get("model_state_dict", data)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError("expected a 'model_state_dict' of tensors")
    # DataParallel adds "module." where it wraps: inside (VAC wraps the ResNet: conv2d.module.conv1...) or around
    # the whole network (module.conv2d...).
    return {key.removeprefix("module.").replace(".module.", "."): value for key, value in state.items()}


def detect_classifier(state: dict[str, torch.Tensor]) -> tuple[int, dict]:
    """(num_classes, classifier section) from the original's classifier weights."""
    weight = state.get("classifier.weight")
    if weight is None or weight.ndim != 2:
        raise CheckpointError("no 2-D 'classifier.weight' in the checkpoint")
    weight_norm = "classifier.bias" not in state
    num_classes = weight.shape[1] if weight_norm else weight.shape[0]
    conv = state.get("conv1d.fc.weight")
    shared = conv is not None and conv.shape == weight.shape and bool(torch.equal(conv, weight))
    return num_classes, {"weight_norm": weight_norm, "shared": shared}


def import_vac(path: str | Path, trust: bool = False) -> tuple[SLRModel, dict[str, dict]]:
    """Build QSLR's network holding the weights of an original VAC/SMKD checkpoint."""
    data = load_file(path, trust)
    try:
        state = original_state_dict(data)
        num_classes, classifier = detect_classifier(state)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    sections = {**ORIGINAL_SECTIONS, "classifier": classifier}
    stages = corrnet_stages(state)
    if stages:
        sections["frame_encoder"] = {"arch": "corrnet_resnet18", "weights": None, "options": {"stages": stages}}
    model = build_model(num_classes, **sections)
    # Mismatches are reported with the original's key names, the ones the user can look up in the file.
    load_state_dict_strict(model, qslr_state(state), str(path), to_original_key)
    return model, sections
