"""The `qslr` command: every stage's group is present and every command answers --help."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from qslr.pipelines.stm import StmEntry, write_stm
from qslr.tools.cli import cli
from qslr.tools.lazy_group import SHORT_HELP_LIMIT, LazyGroup
from qslr.train.scoring.ctm import write_ctm

STAGES = {"data", "train", "eval", "model", "export", "triton", "serve", "infer", "bench", "web"}
HEAVY = ("torch", "torchvision", "onnx", "onnxruntime", "nvidia.dali", "av", "tritonclient")


def all_commands(group: click.Group, prefix: tuple[str, ...] = ()):
    context = click.Context(group)
    for name in group.list_commands(context):
        command = group.get_command(context, name)
        yield (*prefix, name)
        if isinstance(command, click.Group):
            yield from all_commands(command, (*prefix, name))


def lazy_groups(group: click.Group = cli):
    if isinstance(group, LazyGroup):
        yield group
    context = click.Context(group)
    for name in group.list_commands(context):
        command = group.get_command(context, name)
        if isinstance(command, click.Group):
            yield from lazy_groups(command)


def test_every_stage_has_its_group():
    assert set(cli.list_commands(click.Context(cli))) >= STAGES


def test_lazy_entries_name_their_commands_and_repeat_their_help():
    for group in lazy_groups():
        for name, entry in group.lazy.items():
            command = entry.load()
            assert command.name == name, entry.target
            assert entry.short_help == command.get_short_help_str(SHORT_HELP_LIMIT), entry.target


def heavy_imports(arguments: list[str], folder: Path) -> list[str]:
    """The heavy libraries `qslr ARGUMENTS` imports, in a fresh interpreter (in this one the tests have long
    imported everything) started in ``folder``, outside the checkout: the installed `qslr` package is probed, as
    users run it, not the source folders a checkout's working directory would put on the path."""
    probe = (f"import json, sys; from qslr.tools.cli import cli; from click.testing import CliRunner; "
             f"result = CliRunner().invoke(cli, {arguments!r}); assert result.exit_code == 0, result.output; "
             f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=folder)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


LIGHT_HELP = ["data", "train", "eval", "features", "model", "export", "triton", "serve", "infer", "web", "bench",
              "config", "recognise"]


@pytest.mark.parametrize("arguments", [["--help"], ["--version"], *([group, "--help"] for group in LIGHT_HELP),
                                       ["eval", "score", "--help"], ["data", "synth", "--help"]], ids=" ".join)
def test_help_imports_no_heavy_library(arguments, tmp_path):
    assert heavy_imports(arguments, tmp_path) == []


def test_scoring_imports_no_heavy_library(tmp_path):
    write_stm(tmp_path / "ref.stm", [StmEntry("utt1", "Signer01", ("HELLO", "WORLD"))])
    write_ctm(tmp_path / "hyp.ctm", [("utt1", ["HELLO"], None)])
    assert heavy_imports(["eval", "score", "--hyp", str(tmp_path / "hyp.ctm"), "--ref", str(tmp_path / "ref.stm"),
                          "--normalisation", "none"], tmp_path) == []


@pytest.mark.parametrize("path", [(), *all_commands(cli)], ids=lambda p: " ".join(p) or "qslr")
def test_every_command_has_help(path):
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage: ")


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "qslr"  # the virtual environment's, whether or not it is on PATH
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=True)
    assert "qslr" in result.stdout
