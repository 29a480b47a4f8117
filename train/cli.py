"""`qslr train`, `qslr eval` and `qslr config`: experiments, their configs and their scores."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import click

from qslr.pipelines.folder_lock import FolderInUseError
from qslr.pipelines.gloss_normalisation import NORMALISERS
from qslr.train.checkpoint_files import CheckpointWriteError
from qslr.train.config import ConfigError, available_presets, load_config
from qslr.train.scoring.sclite import ScliteNotFoundError
from qslr.train.scoring.score import SCORERS, compare_branches, score


def _run_training(preset: str, overrides: tuple[str, ...], resume: str | None) -> None:
    from qslr.train.trainer import train as run  # imports torch: keep `qslr --help` fast

    try:
        config = load_config(preset, overrides)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    started = time.perf_counter()
    try:
        outcome = run(config, resume)
    except (FolderInUseError, CheckpointWriteError) as exc:
        raise click.ClickException(str(exc)) from None
    if outcome.interrupted:
        click.echo(f"interrupted: resumable checkpoint in {outcome.work_dir / 'checkpoints' / 'last.pt'} "
                   f"(continue with --resume auto)", err=True)
        raise SystemExit(130)
    best = "n/a" if outcome.best_dev_wer is None else f"{outcome.best_dev_wer:.2f} %"
    click.echo(f"trained {outcome.epochs_run} epoch(s), {outcome.global_step} steps in "
               f"{time.perf_counter() - started:.0f} s; best dev WER {best}; checkpoints in "
               f"{outcome.work_dir / 'checkpoints'}")


_TRAIN_OPTIONS = [
    click.option("--config", "preset", required=True, help="A shipped preset (`qslr config list`) or a YAML path."),
    click.option("--resume", default=None, help="A checkpoint to continue from, or 'auto' for work_dir's last.pt."),
    click.argument("overrides", nargs=-1),
]


def _with_train_options(function):
    for option in reversed(_TRAIN_OPTIONS):
        function = option(function)
    return function


@click.command("train", context_settings={"ignore_unknown_options": True})
@_with_train_options
def train_entry(preset: str, resume: str | None, overrides: tuple[str, ...]) -> None:
    """One rank of a training run (what torchrun starts)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s [rank %(process)d] %(message)s")
    _run_training(preset, overrides, resume)


@click.command("train", context_settings={"ignore_unknown_options": True})
@click.option("--nproc", type=int, default=1, show_default=True,
              help="Processes on this machine (one per GPU; on a CPU, gloo ranks).")
@click.option("--max-restarts", type=click.IntRange(min=0), default=0, show_default=True,
              help="Times torchrun restarts the processes after one fails; they continue from the newest "
                   "checkpoint (see train.checkpoint_every_steps).")
@_with_train_options
def train(nproc: int, max_restarts: int, preset: str, resume: str | None, overrides: tuple[str, ...]) -> None:
    """Train PRESET with dotted key=value OVERRIDES; --nproc > 1 launches torchrun (DDP), as --max-restarts does."""
    if nproc <= 1 and not max_restarts:
        _run_training(preset, overrides, resume)
        return
    from qslr.pipelines.folder_lock import folder_lock, launcher_environment
    from qslr.train.elastic import launch

    try:
        work_dir = load_config(preset, overrides).train.work_dir
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    arguments = ["--standalone", f"--nproc-per-node={max(nproc, 1)}", f"--max-restarts={max_restarts}",
                 "-m", "qslr.train", "--config", preset, *(["--resume", resume] if resume else []), *overrides]
    # Held here, by torchrun's agent (this process) for the whole job and its restarts, so that a second run stops
    # with one line instead of a failed rank inside torchrun's report.
    with folder_lock(work_dir, "work_dir") as lock:
        status = launch(arguments, launcher_environment(lock))
    raise SystemExit(status)


@click.group("eval")
def eval_() -> None:
    """Decode a split with a checkpoint and score it (WER per signer, WAR/WDR), or score CTM files."""


def _load_for_inference(checkpoint: Path, data: Path | None, overrides: tuple[str, ...], device: str):
    """(model on device, config, vocab) from a QSLR checkpoint, with the config's overrides applied."""
    import torch

    from qslr.model.checkpoints import CheckpointError, load_checkpoint
    from qslr.train.config import ExperimentConfig, build, deep_merge, parse_overrides

    try:
        loaded = load_checkpoint(checkpoint)
        if loaded.vocab is None:
            raise click.ClickException(f"{checkpoint}: holds no vocabulary (an original checkpoint imported "
                                       f"without --vocab?); import it again with the dataset's vocabulary")
        if "data" not in loaded.config and data is None:
            raise click.ClickException(f"{checkpoint}: holds no training config naming its data (an imported "
                                       f"original checkpoint?); pass --data DATASET")
        values = deep_merge(loaded.config, parse_overrides([*overrides, *([f"data.root={data}"] if data else [])]))
        config = build(ExperimentConfig, values, f"{checkpoint} + command line")
    except (CheckpointError, ConfigError) as exc:
        raise click.ClickException(str(exc)) from None
    target = torch.device("cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu")
    return loaded.model.to(target), config, loaded.vocab, target


_CHECKPOINT = click.option("--checkpoint", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
_DATA = click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
                     help="Prepared dataset [default: the one the checkpoint was trained on].")
_DEVICE = click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)


@eval_.command("run", context_settings={"ignore_unknown_options": True})
@_CHECKPOINT
@click.option("--split", default="test", show_default=True)
@_DATA
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the CTM files go [default: next to the checkpoint].")
@_DEVICE
@click.option("--json", "as_json", is_flag=True)
@click.argument("overrides", nargs=-1)
def run_command(checkpoint: Path, split: str, data: Path | None, out: Path | None, device: str, as_json: bool,
                overrides: tuple[str, ...]) -> None:
    """Decode SPLIT with a checkpoint, write CTM files and score them (e.g. decode.method=greedy)."""
    from qslr.train.evaluation import evaluate

    model, config, vocab, target = _load_for_inference(checkpoint, data, overrides, device)
    result = evaluate(model, config, split, target, vocab, out or checkpoint.parent / f"eval-{split}")
    if as_json:
        click.echo(json.dumps({**result.report.to_dict(), "branches": asdict(result.branches), "split": split,
                               "ctm": str(result.ctm), "seconds": result.seconds}, indent=1))
        return
    click.echo(result.report.table())
    click.echo(f"conv branch WER {result.branches.wer_auxiliary:.2f} %, WAR {result.branches.war:.2f} %, "
               f"WDR {result.branches.wdr:.2f} %; hypotheses in {result.ctm}")


@eval_.group("plot")
def plot() -> None:
    """Draw PNG pictures: a run's training curves, or one video's CTC posteriors under its frames."""


def _picture_size(default: str):
    return click.option("--size", default=default, show_default=True, help="Picture size in pixels, WIDTHxHEIGHT.")


_DPI = click.option("--dpi", type=click.IntRange(min=10), default=100, show_default=True,
                    help="Dots per inch: the size of text and lines relative to the picture.")


@plot.command("curves")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="PNG file to write [default: RUN_DIR/curves.png].")
@_picture_size("1200x380")
@_DPI
def plot_curves_command(run_dir: Path, out: Path | None, size: str, dpi: int) -> None:
    """Losses (total and each term), dev WER of both branches and learning rate of the run in RUN_DIR (a work_dir
    with metrics.csv)."""
    from qslr.train.plots.curves import plot_curves
    from qslr.train.plots.figure import PictureSize, save_png

    try:
        drawn = plot_curves(run_dir, PictureSize.parse(size, dpi))
    except ValueError as exc:  # a PlotError naming the file, or a bad --size
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {save_png(drawn.figure, out or run_dir / 'curves.png')}")


@plot.command("posteriors")
@_CHECKPOINT
@click.argument("video", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="PNG file to write.")
@click.option("--beam-size", type=click.IntRange(min=0), default=None,
              help="Beam width; 0 decodes greedily [default: the checkpoint's decoding settings].")
@_picture_size("1200x600")
@_DPI
@_DEVICE
def plot_posteriors_command(checkpoint: Path, video: Path, out: Path, beam_size: int | None, size: str, dpi: int,
                            device: str) -> None:
    """Frames of VIDEO over time and, beneath them, the CTC posteriors and segments of the glosses CHECKPOINT
    recognises in it."""
    import torch

    from qslr.train.checkpointing import load_trained
    from qslr.train.plots.figure import PictureSize, save_png
    from qslr.train.plots.posteriors import draw_posteriors
    from qslr.train.plots.video_posteriors import checkpoint_decoder, video_posteriors

    target = torch.device("cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu")
    try:  # CheckpointError and VideoDecodeError are ValueErrors that name their file
        picture = PictureSize.parse(size, dpi)
        trained = load_trained(checkpoint)
        result = video_posteriors(trained, video, checkpoint_decoder(trained, beam_size), target)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    drawn = draw_posteriors(result, picture, title=f"{video.name}: {' '.join(result.hypothesis.glosses) or '-'}")
    click.echo(f"{' '.join(result.hypothesis.glosses)}\nwrote {save_png(drawn.figure, out)}")


@click.command("features")
@_CHECKPOINT
@click.option("--split", "splits", multiple=True, default=("train", "dev", "test"), show_default=True)
@_DATA
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@_DEVICE
def features(checkpoint: Path, splits: tuple[str, ...], data: Path | None, out: Path, device: str) -> None:
    """Write frame-wise features per video (<out>/<split>/<id>.npy and index.jsonl; see train/features.py)."""
    from qslr.train.features import extract_features

    model, config, vocab, target = _load_for_inference(checkpoint, data, (), device)
    for split in splits:
        count = extract_features(model, config, split, target, vocab, out)
        click.echo(f"{split}: features of {count} videos in {out / split}")


@eval_.command("score")
@click.option("--hyp", "hypothesis", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CTM of recognised glosses (the BiLSTM branch).")
@click.option("--ref", "reference", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="STM of normalised references.")
@click.option("--aux", "auxiliary", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="CTM of the conv branch: also report WAR and WDR.")
@click.option("--scorer", type=click.Choice(SCORERS), default="python", show_default=True,
              help="python: QSLR's sclite-exact aligner; sclite: run NIST sclite itself.")
@click.option("--normalisation", type=click.Choice(sorted(NORMALISERS)), default="phoenix2014", show_default=True,
              help="Gloss post-processing applied to the hypotheses.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def score_command(hypothesis: Path, reference: Path, auxiliary: Path | None, scorer: str, normalisation: str,
                  as_json: bool) -> None:
    """WER (correct, substitutions, deletions, insertions) overall and per signer."""
    try:
        report = score(hypothesis, reference, normalisation, scorer)
        branches = compare_branches(hypothesis, auxiliary, reference, normalisation) if auxiliary else None
    except (ValueError, ScliteNotFoundError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        result = report.to_dict()
        if branches:
            result["branches"] = asdict(branches)
        click.echo(json.dumps(result, indent=1))
        return
    click.echo(report.table())
    if branches:
        click.echo(f"conv branch WER {branches.wer_auxiliary:.2f} %, WAR {branches.war:.2f} %, "
                   f"WDR {branches.wdr:.2f} %")


@click.group("config")
def config() -> None:
    """List presets and show a resolved experiment config."""


@config.command("list")
def list_presets() -> None:
    """Names of the presets QSLR ships."""
    for name in available_presets():
        click.echo(name)


@config.command("show")
@click.argument("preset")
@click.argument("overrides", nargs=-1)
def show(preset: str, overrides: tuple[str, ...]) -> None:
    """Print PRESET (a shipped preset or a YAML path) with dotted key=value OVERRIDES applied."""
    try:
        click.echo(load_config(preset, overrides).to_yaml(), nl=False)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
