"""The `qslr` command: every stage's group is present and every command answers --help."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from tools.cli import cli

STAGES = {"data", "train", "eval", "model", "export", "triton", "serve", "infer", "bench"}


def all_commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        yield (*prefix, name)
        if isinstance(command, click.Group):
            yield from all_commands(command, (*prefix, name))


def test_every_stage_has_its_group():
    assert set(cli.commands) >= STAGES


@pytest.mark.parametrize("path", [(), *all_commands(cli)], ids=lambda p: " ".join(p) or "qslr")
def test_every_command_has_help(path):
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage: ")


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "qslr"  # the virtual environment's, whether or not it is on PATH
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=True)
    assert "qslr" in result.stdout
