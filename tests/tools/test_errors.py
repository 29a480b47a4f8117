"""Bad input to any `qslr` command ends in one line on standard error naming the thing, and exit status 1."""

from __future__ import annotations

import errno
import socket
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from qslr.model.checkpoints import CheckpointError
from qslr.pipelines.prepared import DatasetFormatError
from qslr.tools.cli import QslrGroup, cli, is_user_error, one_line


@pytest.fixture
def bad(tmp_path: Path) -> dict[str, Path]:
    """Inputs that are wrong in the ways users get them wrong, by name."""
    paths = {"checkpoint": tmp_path / "notes.pt", "empty": tmp_path / "empty", "onnx": tmp_path / "model.onnx",
             "hyp": tmp_path / "hyp.ctm", "ref": tmp_path / "ref.stm", "video": tmp_path / "clip.webm",
             "missing": tmp_path / "missing", "tmp": tmp_path}
    paths["checkpoint"].write_text("not a checkpoint\n")
    paths["empty"].mkdir()
    paths["onnx"].write_bytes(b"\xff" * 64)
    paths["hyp"].write_text("utt1 1 0.00 0.01 HELLO\n")
    paths["ref"].write_text("utt1 A\n")  # an STM line has at least 5 fields
    paths["video"].write_bytes(b"\x1a\x45\xdf\xa3")
    return paths


def assert_one_line_error(result, names: str) -> None:
    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert names in lines[0], lines[0]
    assert "Traceback" not in result.output


# Per command group: its arguments and what the error must name ({name} is the fixture `bad`'s path).
CASES = {
    "data": (["data", "summary", "{empty}"], "{empty}: not a prepared dataset"),
    "train": (["train", "--config", "synthetic", "data.root={missing}", "train.work_dir={tmp}/run"],
              "{missing}: not a prepared dataset"),
    "eval": (["eval", "score", "--hyp", "{hyp}", "--ref", "{ref}"], "{ref}:1"),
    "features": (["features", "--checkpoint", "{checkpoint}", "--out", "{tmp}/features"], "{checkpoint}"),
    "model": (["model", "describe", "{checkpoint}"], "{checkpoint}"),
    "export": (["export", "check", "{onnx}"], "{onnx}: not an ONNX graph"),
    "triton": (["triton", "build", "--checkpoint", "{checkpoint}", "--out", "{tmp}/repository"], "{checkpoint}"),
    "serve": (["serve", "{empty}"], "{empty}: not a QSLR model repository"),
    "infer": (["infer", "{video}", "--serve", "{empty}"], "{empty}: not a QSLR model repository"),
    "bench": (["bench", "infer", "--checkpoint", "{checkpoint}", "--json-out", "{tmp}/infer.json"], "{checkpoint}"),
    "config": (["config", "show", "synthetic", "train.epochs"], "'train.epochs'"),
}


@pytest.mark.parametrize("group", sorted(CASES))
def test_bad_input_is_one_line(group, bad):
    arguments, names = CASES[group]
    result = CliRunner().invoke(cli, [argument.format(**bad) for argument in arguments])
    assert_one_line_error(result, names.format(**bad))


def test_web_on_a_busy_port_is_one_line():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(cli, ["web", "--url", "127.0.0.1:1", "--port", str(port)])
    assert_one_line_error(result, f"port {port}")


def test_an_operating_system_error_names_its_path(bad):
    out = bad["checkpoint"] / "decode.json"  # under a file: its folder cannot be made
    result = CliRunner().invoke(cli, ["bench", "decode", "--steps", "8", "--classes", "6", "--utterances", "2",
                                      "--repeats", "1", "--json-out", str(out)])
    assert_one_line_error(result, f"{bad['checkpoint']}: File exists")


def test_usage_errors_stay_clicks(bad):
    result = CliRunner().invoke(cli, ["eval", "run", "--checkpoint", str(bad["missing"])])
    assert result.exit_code == 2
    assert "does not exist" in result.stderr


def test_verbose_shows_the_traceback(bad):
    result = subprocess.run([sys.executable, "-m", "qslr.tools.cli", "-v", "data", "summary", str(bad["empty"])],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert f"DatasetFormatError: {bad['empty']}: not a prepared dataset" in result.stderr


def test_a_bug_keeps_its_traceback_and_ends_with_a_summary():
    @click.group(cls=QslrGroup, lazy={})
    def group() -> None:
        pass

    @group.command("parse")
    def parse() -> None:
        int("seven")

    result = CliRunner().invoke(group, ["parse"])
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert lines[-1] == ("Error: unexpected ValueError (a bug in QSLR; the traceback above shows where): "
                         "invalid literal for int() with base 10: 'seven'")


@pytest.mark.parametrize(("error", "users"), [
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "x.pt"), True),
    (OSError(errno.EADDRINUSE, "Address already in use"), True),
    (DatasetFormatError("data: not a prepared dataset"), True),
    (CheckpointError("x.pt: no such checkpoint file"), True),
    (ModuleNotFoundError("No module named 'tensorrt'", name="tensorrt"), True),
    (ModuleNotFoundError("No module named 'qslr.model.gone'", name="qslr.model.gone"), False),
    (ValueError("invalid literal"), False),
    (KeyError("qslr_height"), False),
])
def test_which_errors_are_the_users(error, users):
    assert is_user_error(error) is users


def test_one_line():
    assert one_line(FileNotFoundError(errno.ENOENT, "No such file or directory", "x.pt")) == \
        "x.pt: No such file or directory"
    assert one_line(RuntimeError("tritonserver exited\nlog 1\nlog 2\n")) == \
        "tritonserver exited (and 2 more line(s): see them with qslr -v)"
