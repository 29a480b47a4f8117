"""`qslr data synth` and `qslr data summary` as a user runs them, bad input included."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import qslr.pipelines.synthetic.generator as generator
from qslr.tools.cli import cli

SMALL = ["--videos", "6", "--vocab", "6", "--signers", "4", "--heldout-signers", "1", "--max-glosses", "3",
         "--dev-fraction", "0.2", "--test-fraction", "0.2"]


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if ".partial-" in p.name or ".old-" in p.name]


def test_synth_prints_the_summary_and_json_matches_the_files(tmp_path):
    result = run("data", "synth", "--out", str(tmp_path / "ds"), *SMALL, "--workers", "1", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert [s["split"] for s in summary["splits"]] == ["train", "dev", "test"]
    assert sum(s["videos"] for s in summary["splits"]) == 6
    assert summary["disk_bytes"] == sum(p.stat().st_size for p in (tmp_path / "ds").rglob("*") if p.is_file())
    table = run("data", "summary", str(tmp_path / "ds"))
    assert table.exit_code == 0 and "train" in table.output and "glosses" in table.output


def test_refuses_a_non_empty_folder_unless_overwrite(tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    result = run("data", "synth", "--out", str(out), *SMALL)
    assert result.exit_code != 0 and "not empty" in result.output and "--overwrite" in result.output
    assert (out / "notes.txt").read_text() == "keep me"
    result = run("data", "synth", "--out", str(out), *SMALL, "--workers", "1", "--overwrite")
    assert result.exit_code == 0, result.output
    assert not (out / "notes.txt").exists() and (out / "vocab.json").is_file()
    assert leftovers(tmp_path) == []


def test_an_empty_existing_folder_is_fine(tmp_path):
    (tmp_path / "ds").mkdir()
    assert run("data", "synth", "--out", str(tmp_path / "ds"), *SMALL, "--workers", "1").exit_code == 0


@pytest.mark.parametrize("args, message", [
    (["--videos", "0"], "--videos must be at least 3"),
    (["--vocab", "1"], "--vocab 1 is too small"),
    (["--size", "-4"], "--size"),
    (["--min-glosses", "4", "--max-glosses", "2"], "--max-glosses"),
])
def test_impossible_parameters_give_a_one_line_error(tmp_path, args, message):
    result = run("data", "synth", "--out", str(tmp_path / "ds"), *args)
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "ds").exists()


def test_a_failure_midway_leaves_nothing_that_looks_like_a_dataset(tmp_path, monkeypatch, tiny_spec):
    calls = {"n": 0}
    real = generator.write_vp9

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(generator, "write_vp9", failing)
    with pytest.raises(OSError, match="disk full"):
        generator.generate_corpus(tiny_spec, tmp_path / "ds", workers=1, show_progress=False)
    assert not (tmp_path / "ds").exists() and leftovers(tmp_path) == []


# `python -m qslr.tools.cli` with Ctrl-C as a terminal gives it: a child inherits an ignored or blocked SIGINT from
# whatever ran before in this process, and Python then installs no KeyboardInterrupt handler.
WITH_CTRL_C = ("import runpy, signal, sys; signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT}); "
               "signal.signal(signal.SIGINT, signal.default_int_handler); sys.argv[0] = 'qslr'; "
               "runpy.run_module('qslr.tools.cli', run_name='__main__')")


@pytest.mark.slow
def test_ctrl_c_stops_promptly_and_leaves_no_dataset(tmp_path):
    out = tmp_path / "ds"
    command = [sys.executable, "-c", WITH_CTRL_C, "data", "synth", "--out", str(out), "--videos", "2000",
               "--workers", "2"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               cwd=Path(__file__).resolve().parents[2])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(tmp_path.glob(".ds.partial-*/videos/train/*.webm")):
        time.sleep(0.2)
    assert any(tmp_path.glob(".ds.partial-*/videos/train/*.webm")), "generation did not start"
    status = Path(f"/proc/{process.pid}/status").read_text()
    os.kill(process.pid, signal.SIGINT)
    try:
        assert process.wait(timeout=30) != 0
    except subprocess.TimeoutExpired:
        process.kill()
        signals = [line for line in status.splitlines() if line.startswith(("SigBlk", "SigIgn", "SigCgt"))]
        pytest.fail(f"still running 30 s after SIGINT; its signal masks then: {signals}; stderr: "
                    f"{process.communicate()[1].decode(errors='replace')[-2000:]}")
    assert not out.exists() and leftovers(tmp_path) == []
