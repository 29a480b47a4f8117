"""Frame encoders by name, as the config's ``model.frame_encoder.arch`` gives them.

A module of its own so that the encoders it lists (per-frame ones in `frame_encoders`, CorrNet's and CorrNet+'s
clip-aware ones in `corrnet` and `corrnet_plus`, which build on a per-frame ResNet) import each other in one direction
only.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from qslr.model.corrnet import corrnet_encoder
from qslr.model.corrnet_plus import corrnet_plus_encoder
from qslr.model.frame_encoders import resnet_encoder, tiny_cnn_encoder

FRAME_ENCODERS: dict[str, Callable[..., nn.Module]] = {
    "resnet18": lambda **kw: resnet_encoder("resnet18", **kw),
    "resnet34": lambda **kw: resnet_encoder("resnet34", **kw),
    "tiny_cnn": tiny_cnn_encoder,
    "corrnet_resnet18": corrnet_encoder,
    "corrnet_plus_resnet18": corrnet_plus_encoder,
}


def build_frame_encoder(arch: str, weights: str | None = None, options: dict | None = None) -> nn.Module:
    """A per-frame encoder (`FrameEncoder`), or a clip-aware one (``clip_aware``: it also takes the clips'
    lengths, its output at a frame depending on the clip's other frames) such as CorrNet's and CorrNet+'s."""
    if arch not in FRAME_ENCODERS:
        raise ValueError(f"unknown frame encoder {arch!r} (known: {', '.join(FRAME_ENCODERS)})")
    try:
        return FRAME_ENCODERS[arch](weights=weights, **(options or {}))
    except TypeError as exc:
        raise ValueError(f"frame encoder {arch!r}: bad options {options!r} ({exc})") from None
