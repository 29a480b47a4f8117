"""What the parts of `qslr bench gpu-check` build on, made once in one temporary folder: a synthetic corpus, CUDA
training runs of the `synthetic` preset, the trained checkpoint and its ONNX graphs."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from qslr.pipelines.dali_loader import NVDEC_VP9_MIN_SIZE
from qslr.tools.gpu_proof import Once

# NVDEC decodes nothing smaller than its minimum: the demo's 72x72 frames would fail on the GPU.
FRAME_SIZE = max(NVDEC_VP9_MIN_SIZE)
CROP_SIZE = 112
# The preset's small CNN halves the crop four times, to 7x7 here; pooled to its default 4x4 grid, the windows are
# uneven, which ONNX cannot express (the export refuses adaptive pooling then), so the map is kept whole.
MODEL = ("model.frame_encoder.options={channels: [8, 16, 32, 64], grid: 7}",)
# (batch, frames) of the inputs every parity is measured on: one clip at the served minimum, an odd length, and the
# most clips at the most frames of the profile below, each batch of mixed lengths.
BATCHES = ((1, 16), (3, 57), (8, 230))
# The optimisation profile of the engines and of torch-tensorrt's program here: it covers BATCHES.
PROFILE = ("1x16", "4x120", "8x230")


@dataclass(frozen=True)
class CheckSettings:
    videos: int  # synthetic corpus size
    steps: int  # optimiser steps of the bf16 training run whose checkpoint the other parts use
    workers: int  # reference loader workers


@dataclass
class TrainingRun:
    history: list[dict]  # metrics.csv's rows: one per epoch
    global_step: int
    checkpoint: Path
    # The type each part of the model gave its output in training steps: the convolutions under autocast, the
    # BiLSTM kept in float32.
    output_types: dict[str, set[str]] = field(default_factory=dict)

    def state(self) -> dict:
        from qslr.train.checkpointing import load_training_checkpoint

        return load_training_checkpoint(self.checkpoint)


class Workspace:
    def __init__(self, root: Path, settings: CheckSettings):
        self.root, self.settings = root, settings
        self.corpus = Once("the synthetic corpus", self._corpus)
        self.reference_run = Once("the bf16 training run", lambda: self.train("bf16", "bf16", settings.steps))
        self._graphs = {precision: Once(f"the {precision} ONNX export", lambda p=precision: self._graph(p))
                        for precision in ("fp32", "fp16")}

    def spec(self):
        from qslr.pipelines.synthetic.spec import SynthSpec

        return SynthSpec(videos=self.settings.videos, vocab=30, max_glosses=8, size=FRAME_SIZE)

    def epoch_steps(self) -> int:
        """Optimiser steps in one epoch of the corpus's training split, in the preset's batches."""
        from qslr.train.config import load_config

        return math.ceil(self.spec().split_sizes()["train"] / load_config("synthetic").data.batch_size)

    def checkpoint(self) -> Path:
        return self.reference_run().checkpoint

    def graph(self, precision: str) -> Path:
        return self._graphs[precision]()

    def _corpus(self) -> Path:
        from qslr.pipelines.synthetic.generator import generate_corpus

        out = self.root / "synthetic"
        generate_corpus(self.spec(), out, workers=self.settings.workers, show_progress=False)
        return out

    def train(self, name: str, amp: str, steps: int, *overrides: str, resume: bool = False) -> TrainingRun:
        """The `synthetic` preset on this process's GPU with the reference loader, as `qslr train` runs it."""
        from qslr.train.config import load_config
        from qslr.train.trainer import train

        work = self.root / name
        config = load_config("synthetic", [
            f"data.root={self.corpus()}", f"train.work_dir={work}", "train.device=cuda", f"train.amp={amp}",
            f"train.max_steps={steps}", "train.epochs=1000", f"data.crop_size={CROP_SIZE}", "data.loader=reference",
            f"data.num_workers={self.settings.workers}", *MODEL, *overrides])
        with output_types() as seen:
            outcome = train(config, resume="auto" if resume else None)
        torch.cuda.empty_cache()
        return TrainingRun(outcome.history, outcome.global_step, work / "checkpoints" / "last.pt", seen)

    def _graph(self, precision: str) -> Path:
        from qslr.deploy.export.onnx_export import export_onnx
        from qslr.train.checkpointing import load_trained

        out = self.root / f"model.{precision}.onnx"
        export_onnx(load_trained(self.checkpoint()), out, FRAME_SIZE, FRAME_SIZE, precision=precision)
        return out


@contextmanager
def output_types() -> Iterator[dict[str, set[str]]]:
    """The dtypes the temporal convolution and the BiLSTM give their outputs in training mode, while it is open."""
    from qslr.model.sequence_model import BiLSTM
    from qslr.model.temporal_conv import TemporalConv

    seen: dict[str, set[str]] = {}

    def record(module, inputs, output) -> None:
        if module.training and isinstance(module, (TemporalConv, BiLSTM)):
            first = output[0] if isinstance(output, tuple) else output
            seen.setdefault(type(module).__name__, set()).add(str(first.dtype).removeprefix("torch."))

    handle = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        yield seen
    finally:
        handle.remove()


def finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)
