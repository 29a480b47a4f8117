"""`qslr model`: inspect networks and convert checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.group("model")
def model() -> None:
    """Inspect QSLR checkpoints and convert the original VAC, CorrNet and CorrNet+ code's."""


@model.command("import-vac")
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="QSLR checkpoint to write.")
@click.option("--vocab", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="vocab.json of the prepared dataset, or the original gloss_dict.npy.")
@click.option("--trust", is_flag=True, help="Allow arbitrary pickled objects in CHECKPOINT (only for files you trust).")
def import_vac_command(checkpoint: Path, out: Path, vocab: Path | None, trust: bool) -> None:
    """Convert a checkpoint of the original VAC code (baseline, VAC or SMKD), or of CorrNet or CorrNet+, to a QSLR
    checkpoint."""
    # Imported here: PyTorch takes seconds to import, and `qslr model --help` needs none of it.
    from qslr.model.checkpoints import CheckpointError, save_checkpoint
    from qslr.model.temporal_poolings import LIFT
    from qslr.model.vac_import import import_vac
    from qslr.pipelines.prepared import DatasetFormatError, read_any_vocab

    try:
        network, sections = import_vac(checkpoint, trust)
        glosses = read_any_vocab(vocab) if vocab else None
    except (CheckpointError, DatasetFormatError) as exc:
        raise click.ClickException(str(exc)) from None
    if glosses is not None and len(glosses) + 1 != network.num_classes:
        raise click.ClickException(f"{vocab}: {len(glosses)} glosses + blank do not match the checkpoint's "
                                   f"{network.num_classes} classes")
    save_checkpoint(out, network, {"model": sections}, glosses)
    kind = "SMKD (shared weight-normalised classifier)" if sections["classifier"]["shared"] else "baseline/VAC"
    encoder = sections["frame_encoder"]
    if encoder["arch"].startswith("corrnet"):
        name = "CorrNet+" if encoder["arch"] == "corrnet_plus_resnet18" else "CorrNet"
        kind = f"{name} (correlations after stages {encoder['options']['stages']}), {kind}"
    if sections["temporal"].get("pooling") == LIFT:
        kind += ", lifting pools"
    click.echo(f"wrote {out}: {kind}, {network.num_classes} classes, "
               f"{sum(p.numel() for p in network.parameters()) / 1e6:.1f} M parameters")


@model.command("describe")
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def describe(checkpoint: Path) -> None:
    """Print a QSLR checkpoint's architecture, classes and parameter count as JSON."""
    from qslr.model.checkpoints import CheckpointError, load_checkpoint

    try:
        loaded = load_checkpoint(checkpoint)
    except CheckpointError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps({
        "num_classes": loaded.model.num_classes,
        "vocabulary": len(loaded.vocab) if loaded.vocab else None,
        "parameters": sum(p.numel() for p in loaded.model.parameters()),
        "model_sections": loaded.model_sections,
        "training": {k: v for k, v in (loaded.training or {}).items() if isinstance(v, (int, float, str))},
    }, indent=1))
