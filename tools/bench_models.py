"""Inputs shared by the inference and serving benchmarks: a checkpoint and some videos."""

from __future__ import annotations

from pathlib import Path

from qslr.pipelines.synthetic.generator import generate_corpus
from qslr.pipelines.synthetic.spec import SynthSpec
from qslr.train.config import load_config
from qslr.train.trainer import train

DEMO_CHECKPOINT = Path("runs/synthetic/checkpoints/best.pt")


def checkpoint_or_quick_one(checkpoint: Path | None, workdir: Path) -> tuple[Path, Path]:
    """(checkpoint, prepared dataset): the given one with its training data, the demo's, or - when neither
    exists - a model trained for a few steps on a small generated corpus (throughput does not depend on
    how well a model recognises)."""
    import torch

    from qslr.model.checkpoints import load_checkpoint

    for candidate in (checkpoint, DEMO_CHECKPOINT):
        if candidate is not None and candidate.is_file():
            config = load_checkpoint(candidate).config or {}
            root = Path(config.get("data", {}).get("root", ""))
            if (root / "vocab.json").is_file():
                return candidate, root
            if candidate == checkpoint:
                raise FileNotFoundError(f"{checkpoint}: its training data {root} is not here")
    root = workdir / "corpus"
    generate_corpus(SynthSpec(videos=60, vocab=30, max_glosses=8), root, show_progress=False)
    torch.manual_seed(0)
    train(load_config("synthetic", [f"data.root={root}", f"train.work_dir={workdir / 'run'}", "train.epochs=1",
                                    "train.max_steps=5"]))
    return workdir / "run" / "checkpoints" / "last.pt", root


def untrained_checkpoint(preset: str, workdir: Path, size: int, glosses: int = 1295) -> Path:
    """A checkpoint of ``preset``'s model with random weights (ImageNet weights are not downloaded) for frames of
    ``size`` x ``size``, for speed measurements: a network's speed does not depend on its weights."""
    import torch

    from qslr.model.checkpoints import input_spec_for
    from qslr.model.network import build_model
    from qslr.train.checkpointing import model_sections, save_training_checkpoint

    config = load_config(preset, ["model.frame_encoder.weights=null"])
    vocab = {f"GLOSS{i}": i + 1 for i in range(glosses)}
    torch.manual_seed(0)
    model = build_model(len(vocab) + 1, **model_sections(config)).eval()
    spec = input_spec_for(config.model.temporal.kernels, config.data.crop_size, size, size, 25.0)
    path = workdir / f"untrained-{preset}.pt"
    save_training_checkpoint(path, model, config, vocab, spec, {})
    return path
