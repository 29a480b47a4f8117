"""A checkpoint as the served model, the frame size it states, and inputs of the served signature: for export,
serving, local recognition and the benchmarks alike, with no exporter imported (a base install has no onnx)."""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from qslr.model.checkpoints import CheckpointError
from qslr.model.served_model import ServedModel
from qslr.train.checkpointing import TrainedModel, load_trained

# A checkpoint's path, or the checkpoint loaded once by a command that uses it for several things.
Checkpoint = str | Path | TrainedModel


class ModelLoadError(ValueError):
    """A checkpoint or graph that cannot be served or recognised with; the message names the file."""


def trained_model(checkpoint: Checkpoint) -> TrainedModel:
    """``checkpoint`` loaded, or a copy of the one already loaded: the served model is built from the network in
    place (its precision, its classifier), so every use gets a network of its own, as if read from the file."""
    if isinstance(checkpoint, TrainedModel):
        return copy.deepcopy(checkpoint)
    try:
        return load_trained(checkpoint)
    except CheckpointError as exc:
        raise ValueError(str(exc)) from None


def served_from_checkpoint(checkpoint: Checkpoint, top_k: int | None = None,
                           frame_size: tuple[int, int] | None = None,
                           precision: str = "fp32") -> tuple[ServedModel, dict]:
    """The served model of ``checkpoint`` in ``precision``, and what the checkpoint says of its input."""
    trained = trained_model(checkpoint)
    spec = trained.input
    return ServedModel(trained.model.float().eval(), spec.crop_size, top_k, frame_size, precision, spec.pixel_offset,
                       spec.pixel_scale), \
        {"vocab": trained.vocab, "config": trained.config.to_dict(), "input": trained.input}


def frame_size(source: str | Path, stated: tuple[int | None, int | None], height: int | None,
               width: int | None) -> tuple[int, int]:
    """The frame size asked for, else the one a checkpoint or graph states (height, width)."""
    height, width = height or stated[0], width or stated[1]
    if not height or not width:
        raise ModelLoadError(f"{source}: states no frame size (written before checkpoints carried it); "
                             f"pass --height and --width")
    return height, width


def checkpoint_frame_size(checkpoint: str | Path, height: int | None, width: int | None) -> tuple[int, int]:
    """The frame size asked for, else the one ``checkpoint``'s input section states (the file is read only then)."""
    if height and width:
        return height, width
    spec = load_trained(checkpoint).input
    return frame_size(checkpoint, (spec.height, spec.width), height, width)


def example_inputs(batch: int, time: int, height: int, width: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random uint8 frames (B, T, H, W, 3) and lengths from T down to T / 2: a batch of mixed lengths."""
    generator = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (batch, time, height, width, 3), dtype=torch.uint8, generator=generator)
    lengths = torch.linspace(time, max(1, time // 2), batch).round().to(torch.int64)
    return frames, lengths
