"""A checkpoint as the served model, and inputs of the served signature: for export, local recognition and the
benchmarks alike, with no exporter imported (a base install has no onnx)."""

from __future__ import annotations

from pathlib import Path

import torch

from qslr.model.checkpoints import CheckpointError
from qslr.model.served_model import ServedModel
from qslr.train.checkpointing import load_trained


def served_from_checkpoint(checkpoint: str | Path, top_k: int | None = None,
                           frame_size: tuple[int, int] | None = None,
                           precision: str = "fp32") -> tuple[ServedModel, dict]:
    """The served model of ``checkpoint`` in ``precision``, and what the checkpoint says of its input."""
    try:
        trained = load_trained(checkpoint)
    except CheckpointError as exc:
        raise ValueError(str(exc)) from None
    spec = trained.input
    return ServedModel(trained.model.float().eval(), spec.crop_size, top_k, frame_size, precision, spec.pixel_offset,
                       spec.pixel_scale), \
        {"vocab": trained.vocab, "config": trained.config.to_dict(), "input": trained.input}


def example_inputs(batch: int, time: int, height: int, width: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random uint8 frames (B, T, H, W, 3) and lengths from T down to T / 2: a batch of mixed lengths."""
    generator = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (batch, time, height, width, 3), dtype=torch.uint8, generator=generator)
    lengths = torch.linspace(time, max(1, time // 2), batch).round().to(torch.int64)
    return frames, lengths
