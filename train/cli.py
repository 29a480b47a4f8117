"""`qslr train`, `qslr eval` and `qslr config`: experiments, their configs and their scores."""

from __future__ import annotations

import click

from train.config import ConfigError, available_presets, load_config


@click.group("train")
def train() -> None:
    """Train with torchrun, DDP and SyncBatchNorm (arrives with the training issue)."""


@click.group("eval")
def eval_() -> None:
    """Decode, write CTM files and score WER (arrives with the model and training issues)."""


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
