"""`qslr data`: build prepared datasets and describe them."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from pipelines.atomic_output import OutputExistsError
from pipelines.prepared import DatasetFormatError
from pipelines.summary import print_summary, summarise
from pipelines.synthetic.generator import generate_corpus
from pipelines.synthetic.spec import SynthSpec, SynthSpecError

log = logging.getLogger(__name__)
_DEFAULTS = SynthSpec()


@click.group("data")
def data() -> None:
    """Prepare datasets (synthetic, Phoenix-2014, Phoenix-2014-T, CSL-Daily) and describe them."""


@data.command("synth")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Dataset directory to create.")
@click.option("--videos", type=int, default=_DEFAULTS.videos, show_default=True, help="Videos in all splits together.")
@click.option("--vocab", type=int, default=_DEFAULTS.vocab, show_default=True, help="Number of distinct glosses.")
@click.option("--signers", type=int, default=_DEFAULTS.signers, show_default=True, help="Number of signers.")
@click.option("--heldout-signers", type=int, default=_DEFAULTS.heldout_signers, show_default=True,
              help="Signers kept out of train; dev and test use only them.")
@click.option("--min-glosses", type=int, default=_DEFAULTS.min_glosses, show_default=True)
@click.option("--max-glosses", type=int, default=_DEFAULTS.max_glosses, show_default=True)
@click.option("--dev-fraction", type=float, default=_DEFAULTS.dev_fraction, show_default=True)
@click.option("--test-fraction", type=float, default=_DEFAULTS.test_fraction, show_default=True)
@click.option("--size", type=int, default=_DEFAULTS.size, show_default=True, help="Frame height and width in pixels.")
@click.option("--fps", type=int, default=_DEFAULTS.fps, show_default=True)
@click.option("--seed", type=int, default=_DEFAULTS.seed, show_default=True, help="Same seed, same files, bit for bit.")
@click.option("--appearance-variation", type=float, default=_DEFAULTS.appearance_variation, show_default=True,
              help="0: all signers look alike; 1: realistic spread of skin tones, clothes, backgrounds.")
@click.option("--size-jitter", type=float, default=_DEFAULTS.size_jitter, show_default=True)
@click.option("--speed-jitter", type=float, default=_DEFAULTS.speed_jitter, show_default=True)
@click.option("--position-jitter", type=float, default=_DEFAULTS.position_jitter, show_default=True)
@click.option("--noise", type=float, default=_DEFAULTS.noise, show_default=True,
              help="Max camera noise std (0..1 scale).")
@click.option("--crf", type=int, default=_DEFAULTS.crf, show_default=True, help="VP9 constant quality.")
@click.option("--workers", type=int, default=None, help="Rendering processes [default: all cores].")
@click.option("--phoenix-raw", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also write the corpus in the raw RWTH-PHOENIX-Weather 2014 layout (PNG frames, corpus CSV) here.")
@click.option("--overwrite", is_flag=True, help="Replace existing output directories.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def synth(out: Path, workers: int | None, phoenix_raw: Path | None, overwrite: bool, as_json: bool, **knobs) -> None:
    """Render the synthetic sign-language corpus as a prepared dataset."""
    spec = SynthSpec(**knobs)
    try:
        generate_corpus(spec, out, overwrite=overwrite, workers=workers, phoenix_raw_out=phoenix_raw)
    except (SynthSpecError, OutputExistsError) as exc:
        raise click.ClickException(str(exc)) from None
    _show(out, as_json)


@data.command("summary")
@click.argument("root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def summary(root: Path, as_json: bool) -> None:
    """Describe a prepared dataset: videos, frames, glosses, signers per split, disk size."""
    _show(root, as_json)


def _show(root: Path, as_json: bool) -> None:
    try:
        result = summarise(root)
    except DatasetFormatError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=1))
    else:
        print_summary(result)
