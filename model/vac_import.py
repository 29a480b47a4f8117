"""Loading checkpoints of the original VAC code (VIPL-SLP/VAC_CSLR), and of CorrNet (hulianyuyy/CorrNet) and CorrNet+
(hulianyuyy/CorrNet_Plus, its CorrNet_Plus_CSLR), built on it, into QSLR's network.

The original's state dict (docs/original_vac.md, "Checkpoints of the original") names the parts conv2d
(ResNet-18 without fc), conv1d (TemporalConv, with its classifier as conv1d.fc), temporal_model (the BiLSTM)
and classifier; under
DataParallel the ResNet's keys carry an extra ``.module``. The weight-normalised classifier stores its
weight as (in, out), the transpose of nn.Linear, and QSLR's NormLinear keeps that orientation.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

from qslr.model.checkpoints import CheckpointError, load_file, load_state_dict_strict
from qslr.model.frame_encoders import IMAGENET_WIDTH
from qslr.model.network import SLRModel, build_model
from qslr.model.temporal_poolings import LIFT
from qslr.pipelines.temporal_padding import parse_kernel

log = logging.getLogger(__name__)

# The original architecture (docs/original_vac.md); only the classifier differs between the presets.
ORIGINAL_SECTIONS = {
    "frame_encoder": {"arch": "resnet18", "weights": None, "options": {}},
    "temporal": {"kernels": ["K5", "P2", "K5", "P2"], "hidden_size": 1024},
    "sequence": {"hidden_size": 1024, "num_layers": 2, "dropout": 0.3},
}
# (original prefix, QSLR prefix), the first that matches applies. CorrNet's and CorrNet+'s modules and their weights
# sit beside the ResNet's stages in its conv2d; QSLR's encoders keep them beside their trunk, by their names.
_PREFIXES = (
    ("conv2d.corr", "frame_encoder.corr"),
    ("conv2d.temporal_weight", "frame_encoder.temporal_weight"),
    ("conv2d.alpha", "frame_encoder.alpha"),
    ("conv2d.", "frame_encoder.trunk."),
    ("conv1d.temporal_conv.", "temporal.temporal_conv."),
    ("conv1d.fc.", "conv_classifier."),
    ("temporal_model.rnn.", "sequence.rnn."),
    ("classifier.", "classifier."),
)
# CorrNet+'s correlation modules also hold parameters its forward never reads (an MLP and a third set of mixing
# weights); QSLR's modules have no such parameters, so these keys are left out on import.
_UNREAD_BY_THE_ORIGINAL = re.compile(r"conv2d\.corr\d+\.(mlp\.|weights3$)")


def _lifting_prefixes(kernels: list[str]) -> tuple[tuple[str, str], ...]:
    """CorrNet+'s TemporalConv, a list of a block per kernel, nests each K's convolution and BatchNorm under its
    block (temporal_conv.0.0, temporal_conv.0.1) and puts each lifting pool at its block's index; QSLR keeps VAC's
    flat indices (temporal_conv.0, .1, .2 the ReLU, then the pool at .3)."""
    pairs, flat = [], 0
    for index, (kind, _) in enumerate(map(parse_kernel, kernels)):
        if kind == "K":
            pairs += [(f"conv1d.temporal_conv.{index}.{part}.", f"temporal.temporal_conv.{flat + part}.")
                      for part in (0, 1)]
            flat += 3
        else:
            pairs.append((f"conv1d.temporal_conv.{index}.", f"temporal.temporal_conv.{flat}."))
            flat += 1
    return tuple(pairs)


def _swap_prefix(key: str, source: int, prefixes: tuple[tuple[str, str], ...]) -> str:
    for pair in prefixes:
        if key.startswith(pair[source]):
            return pair[1 - source] + key[len(pair[source]):]
    return key  # no known prefix: reported as unexpected by the strict load


def to_qslr_key(original: str, prefixes: tuple[tuple[str, str], ...] = _PREFIXES) -> str:
    return _swap_prefix(original, 0, prefixes)


def to_original_key(ours: str, prefixes: tuple[tuple[str, str], ...] = _PREFIXES) -> str:
    return _swap_prefix(ours, 1, prefixes)


def is_corrnet_plus(state: dict[str, torch.Tensor]) -> bool:
    """CorrNet+'s encoder has a temporal weighting module beside each correlation module."""
    return any(key.startswith("conv2d.temporal_weight") for key in state)


def has_lifting_pools(state: dict[str, torch.Tensor]) -> bool:
    return any(key.startswith("conv1d.temporal_conv.") and ".predictor." in key for key in state)


def corrnet_stages(state: dict[str, torch.Tensor]) -> list[int]:
    """The ResNet stages a CorrNet or CorrNet+ checkpoint has correlation modules after; none for VAC. CorrNet
    numbers its modules from 1 (corr1 follows stage 2), CorrNet+ by their stage (corr2)."""
    first = 2 if is_corrnet_plus(state) else 1
    return sorted({int(key.split(".")[1][len("corr"):]) + 2 - first for key in state if key.startswith("conv2d.corr")})


def qslr_state(state: dict[str, torch.Tensor], prefixes: tuple[tuple[str, str], ...] = _PREFIXES
               ) -> dict[str, torch.Tensor]:
    """The original's state dict under QSLR's names. CorrNet and CorrNet+ write their ResNet with 3D convolutions
    of temporal size 1: their (out, in, 1, k, k) kernels are the per-frame 2D kernels QSLR's trunk holds."""
    ours = {}
    unread = sorted(key for key in state if _UNREAD_BY_THE_ORIGINAL.match(key))
    if unread:
        log.info("left out %d parameters the original never reads: %s", len(unread), ", ".join(unread))
    for key, value in state.items():
        if key in unread:
            continue
        name = to_qslr_key(key, prefixes)
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


def original_sections(state: dict[str, torch.Tensor], classifier: dict) -> dict[str, dict]:
    """The model sections of the network an original checkpoint holds: VAC's, with CorrNet's or CorrNet+'s encoder
    where it has correlation modules, and lifting pools where its temporal CNN has them."""
    sections = {**ORIGINAL_SECTIONS, "classifier": classifier}
    # The ResNet's width is its stem's channels: ResNet-18's 64 in every released file, fewer in a narrowed one.
    stem = state.get("conv2d.conv1.weight")
    width = {"width": stem.shape[0]} if stem is not None and stem.shape[0] != IMAGENET_WIDTH else {}
    stages = corrnet_stages(state)
    if stages:
        arch = "corrnet_plus_resnet18" if is_corrnet_plus(state) else "corrnet_resnet18"
        sections["frame_encoder"] = {"arch": arch, "weights": None, "options": {"stages": stages, **width}}
    elif width:
        encoder = sections["frame_encoder"]
        sections["frame_encoder"] = {**encoder, "options": {**encoder["options"], **width}}
    if has_lifting_pools(state):
        sections["temporal"] = {**sections["temporal"], "pooling": LIFT}
    return sections


def import_vac(path: str | Path, trust: bool = False) -> tuple[SLRModel, dict[str, dict]]:
    """Build QSLR's network holding the weights of an original VAC/SMKD, CorrNet or CorrNet+ checkpoint."""
    data = load_file(path, trust)
    try:
        state = original_state_dict(data)
        num_classes, classifier = detect_classifier(state)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    sections = original_sections(state, classifier)
    prefixes = _PREFIXES
    if sections["temporal"].get("pooling") == LIFT:
        prefixes = _lifting_prefixes(sections["temporal"]["kernels"]) + prefixes
    model = build_model(num_classes, **sections)
    # Mismatches are reported with the original's key names, the ones the user can look up in the file.
    load_state_dict_strict(model, qslr_state(state, prefixes), str(path), lambda key: to_original_key(key, prefixes))
    return model, sections
