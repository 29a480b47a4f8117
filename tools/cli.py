"""The `qslr` command: one group per stage, each defined in the package that owns the stage."""

from __future__ import annotations

import logging

import click

from deploy.cli import export, infer, serve, triton
from deploy.web.cli import web
from model.cli import model
from pipelines.cli import data
from tools.bench import bench
from train.cli import config, eval_, features, train

COMMANDS = (data, train, eval_, features, model, export, triton, serve, infer, web, bench, config)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.version_option(package_name="qslr")
def cli(verbose: int) -> None:
    """QSLR: continuous sign language recognition (VAC / SMKD) from data to a served model."""
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


for _command in COMMANDS:
    cli.add_command(_command)


def main() -> None:
    cli(prog_name="qslr")


if __name__ == "__main__":
    main()
