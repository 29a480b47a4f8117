"""`qslr train`, `qslr eval` and `qslr config`: experiments, their configs and their scores."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click

from pipelines.gloss_normalisation import NORMALISERS
from train.config import ConfigError, available_presets, load_config
from train.scoring.sclite import ScliteNotFoundError
from train.scoring.score import SCORERS, compare_branches, score


@click.group("train")
def train() -> None:
    """Train with torchrun, DDP and SyncBatchNorm (arrives with the training issue)."""


@click.group("eval")
def eval_() -> None:
    """Score recognised glosses (decoding a checkpoint arrives with the training issue)."""


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
    """Names of the presets in configs/."""
    for name in available_presets():
        click.echo(name)


@config.command("show")
@click.argument("preset")
@click.argument("overrides", nargs=-1)
def show(preset: str, overrides: tuple[str, ...]) -> None:
    """Print PRESET (a name in configs/ or a YAML path) with dotted key=value OVERRIDES applied."""
    try:
        click.echo(load_config(preset, overrides).to_yaml(), nl=False)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
