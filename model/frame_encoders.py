"""Frame encoders: one image in, one feature vector out, chosen by name from the config.

Each builder takes a keyword-only ``weights``: the name or member of a torchvision weights enum
(ImageNet weights, fetched as torchvision fetches them: from its cache, else downloaded there with a
progress bar on a terminal and the file's hash checked), a path to a state-dict file, or None for random
initialisation.
"""

from __future__ import annotations

import os
import pickle
import sys
from collections.abc import Callable, Sequence
from enum import Enum
from pathlib import Path

import torch
import torchvision
from torch import nn


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights were requested but cannot be had (offline, a failed download, a missing file)."""


class FrameEncoder(nn.Module):
    """Wraps a 2D CNN trunk: (N, 3, H, W) -> (N, out_dim)."""

    def __init__(self, trunk: nn.Module, out_dim: int):
        super().__init__()
        self.trunk = trunk
        self.out_dim = out_dim
        # channels_last roughly doubles convolution speed on CPUs and suits tensor cores on GPUs.
        self.to(memory_format=torch.channels_last)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.trunk(frames.contiguous(memory_format=torch.channels_last))


def cached_weights_file(weights: torchvision.models.WeightsEnum) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def _state_dict(weights: str | Enum | None, enum: type[torchvision.models.WeightsEnum] | None, arch: str):
    """Resolve ``weights`` to a state dict (or None)."""
    if weights is None:
        return None
    if isinstance(weights, (str, os.PathLike)) and Path(weights).suffix in (".pt", ".pth"):
        path = Path(weights)
        if not path.is_file():
            raise WeightsUnavailableError(f"{arch}: weights file {path} does not exist")
        state = torch.load(path, map_location="cpu", weights_only=True)
        return state.get("state_dict", state) if isinstance(state, dict) else state
    if enum is None:
        raise WeightsUnavailableError(f"{arch}: has no pretrained weights; use a .pt/.pth file or null")
    try:
        member = enum[weights] if isinstance(weights, str) else enum(weights)
    except (KeyError, ValueError):
        known = ", ".join(m.name for m in enum)
        raise WeightsUnavailableError(
            f"{arch}: unknown weights {weights!r} (known: {known}, a file, or null)") from None
    return download_weights(member, arch)


def download_weights(member: torchvision.models.WeightsEnum, arch: str) -> dict:
    """``member``'s state dict through torchvision's own mechanism: its cache folder, else a download into it
    (progress on a terminal; the hash in the file name checked, a mismatch leaving nothing in the cache).
    Where that fails, one line naming the file, its URL and where to put it."""
    cached = cached_weights_file(member)
    try:
        return member.get_state_dict(progress=sys.stderr.isatty(), check_hash=True)
    # URLError and HTTPError are OSErrors, a bad hash a RuntimeError, a damaged cached file an UnpicklingError.
    except (OSError, RuntimeError, ValueError, pickle.UnpicklingError) as exc:
        reason = str(getattr(exc, "reason", None) or exc).splitlines()[0]
        raise WeightsUnavailableError(
            f"{arch}: cannot get the {member.name} weights {cached.name} from {member.url} ({reason}); download "
            f"it yourself and put it at {cached}, pass a .pt/.pth file, or set the weights to null") from None


# torchvision's ResNets: 64 channels after the stem, doubled at each of stages 2-4.
IMAGENET_WIDTH = 64


def resnet_encoder(arch: str, *, weights: str | Enum | None = None, width: int = IMAGENET_WIDTH) -> FrameEncoder:
    """A torchvision ResNet with its classifier removed (512-d features for ResNet-18/34).

    ``width``: channels after the stem (64 in torchvision's, whose ImageNet weights need it); a narrower one keeps
    every layer and block of the architecture at a fraction of its cost, for tests and quick experiments.
    """
    builder: Callable[..., torchvision.models.ResNet] = getattr(torchvision.models, arch)
    enum = torchvision.models.get_model_weights(arch)
    network = builder(weights=None)
    if width != IMAGENET_WIDTH:
        if weights is not None:
            raise ValueError(f"{arch}: pretrained weights are for width {IMAGENET_WIDTH}, not {width}; set the "
                             f"weights to null")
        _narrow(network, width)
    state = _state_dict(weights, enum, arch)
    if state is not None:
        network.load_state_dict(state)
    out_dim = network.fc.in_features
    network.fc = nn.Identity()
    return FrameEncoder(network, out_dim)


def _narrow(network: torchvision.models.ResNet, width: int) -> None:
    """Rebuild ``network``'s stem and stages with ``width`` channels after the stem, through torchvision's own
    layer builder (same blocks per stage, strides and initialisation)."""
    if width < 1:
        raise ValueError(f"ResNet width must be positive, got {width}")
    block = type(network.layer1[0])
    blocks = [len(getattr(network, f"layer{i}")) for i in range(1, 5)]
    network.inplanes = width
    network.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
    network.bn1 = nn.BatchNorm2d(width)
    for stage, count in enumerate(blocks, start=1):
        planes = width * 2 ** (stage - 1)
        setattr(network, f"layer{stage}", network._make_layer(block, planes, count, stride=1 if stage == 1 else 2))
    network.fc = nn.Linear(width * 8 * block.expansion, network.fc.out_features)
    for module in network.modules():  # as torchvision's ResNet initialises itself
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.constant_(module.weight, 1)
            nn.init.constant_(module.bias, 0)


class _TinyTrunk(nn.Sequential):
    def __init__(self, channels: Sequence[int], grid: int, out_dim: int):
        layers: list[nn.Module] = []
        previous = 3
        for width in channels:
            # Strided convolutions rather than convolution + pooling: 4x faster on a CPU for the same map.
            layers += [nn.Conv2d(previous, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True)]
            previous = width
        # A small spatial map, flattened: where the hands are relative to the face is the signal,
        # and global average pooling would throw it away.
        layers += [nn.AdaptiveAvgPool2d(grid), nn.Flatten(), nn.Linear(previous * grid * grid, out_dim),
                   nn.ReLU(inplace=True)]
        super().__init__(*layers)


def tiny_cnn_encoder(*, weights: str | None = None, channels: Sequence[int] = (8, 16, 32, 64),
                     grid: int = 4, out_dim: int = 256) -> FrameEncoder:
    """A few strided conv-BN-ReLU stages for small frames; fast enough to train on a CPU."""
    encoder = FrameEncoder(_TinyTrunk(channels, grid, out_dim), out_dim)
    state = _state_dict(weights, None, "tiny_cnn")
    if state is not None:
        encoder.trunk.load_state_dict(state)
    return encoder
