"""The `qslr` command: one group per stage, each defined in the package that owns the stage."""

from __future__ import annotations

import logging

import click

from tools.lazy_group import LazyCommand, LazyGroup

# Imported only when used, so that `qslr --help` answers at once.
COMMANDS = {
    "data": LazyCommand("pipelines.cli:data",
        "Prepare datasets (synthetic, Phoenix-2014, Phoenix-2014-T, CSL-Daily)..."),
    "train": LazyCommand("train.cli:train",
        "Train PRESET with dotted key=value OVERRIDES; --nproc > 1 launches..."),
    "eval": LazyCommand("train.cli:eval_",
        "Decode a split with a checkpoint and score it (WER per signer,..."),
    "features": LazyCommand("train.cli:features",
        "Write frame-wise features per video (<out>/<split>/<id>.npy and..."),
    "model": LazyCommand("model.cli:model",
        "Inspect QSLR checkpoints and convert the original VAC code's."),
    "export": LazyCommand("deploy.cli:export",
        "Export a checkpoint to ONNX, TensorRT or torch-tensorrt."),
    "triton": LazyCommand("deploy.cli:triton",
        "Build Triton model repositories."),
    "serve": LazyCommand("deploy.cli:serve",
        "Run tritonserver on REPOSITORY until Ctrl-C, forwarding its log."),
    "infer": LazyCommand("deploy.cli:infer",
        "Recognise VIDEOS through a server; prints the glosses of each."),
    "web": LazyCommand("deploy.web.cli:web",
        "Serve a page on HOST:PORT to recognise an uploaded or recorded video..."),
    "bench": LazyCommand("tools.bench:bench",
        "Benchmarks: each prints a table, writes JSON, and reports ratios..."),
    "config": LazyCommand("train.cli:config",
        "List presets and show a resolved experiment config."),
}


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.version_option(package_name="qslr")
def cli(verbose: int) -> None:
    """QSLR: continuous sign language recognition (VAC / SMKD) from data to a served model."""
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main() -> None:
    cli(prog_name="qslr")


if __name__ == "__main__":
    main()
