"""One writer per output folder: a second `qslr data prepare` or `qslr train` into a folder that a live run writes
stops with one line naming the folder and that run's process; a run killed with SIGKILL blocks nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from qslr.pipelines.folder_lock import FolderInUseError, folder_lock, lock_path
from qslr.tools.cli import cli


def _start(script: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _wait_until_held_by(folder: Path, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read()
        path = lock_path(folder)
        if path.is_file() and path.read_text().split("\n")[0] == str(process.pid):
            return
        time.sleep(0.2)
    raise AssertionError(f"{folder} was never locked by process {process.pid}")


def _kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(30)


def _refusal(result, folder: Path, pid: int) -> str:
    assert result.exit_code == 1, result.output
    (line,) = [line for line in result.output.splitlines() if line.strip()]
    assert line.startswith(f"Error: {folder}: ") and f"in use by process {pid}" in line, line
    return line


def test_the_lock_names_its_holder_and_a_killed_holder_blocks_nothing(tmp_path):
    folder = tmp_path / "out"
    holder = _start(f"""
        import time
        from qslr.pipelines.folder_lock import folder_lock
        with folder_lock({str(folder)!r}, "prepared dataset"):
            time.sleep(600)
    """, tmp_path)
    try:
        _wait_until_held_by(folder, holder)
        refused = f"{folder}: prepared dataset in use by process {holder.pid}"
        with pytest.raises(FolderInUseError, match=refused), folder_lock(folder, "prepared dataset"):
            pass
    finally:
        _kill(holder)
    with folder_lock(folder, "prepared dataset") as path:  # the dead holder's record does not block
        assert path.read_text().split("\n")[0] == str(os.getpid())
    assert not folder.exists()  # the lock lives beside the folder, never in it


@pytest.mark.slow
def test_a_second_prepare_into_a_folder_being_prepared_is_refused(raw_phoenix, tmp_path):
    out = tmp_path / "prepared"
    # A real preparation, its encoder slowed so that it is still running when the second one starts.
    first = _start(f"""
        import time
        from qslr.pipelines import prepare
        encode = prepare._encode
        def slow(job):
            time.sleep(2)
            return encode(job)
        prepare._encode = slow
        prepare.prepare_corpus("phoenix2014", {str(raw_phoenix[1])!r}, {str(out)!r},
                               prepare.PrepareSettings(width=72, height=72, workers=1), show_progress=False)
    """, tmp_path)
    try:
        _wait_until_held_by(out, first)
        before = sorted(p.relative_to(out) for p in out.rglob("*")) if out.exists() else []
        second = CliRunner().invoke(cli, ["data", "prepare", "phoenix2014", "--root", str(raw_phoenix[1]), "--out",
                                          str(out), "--size", "72x72", "--workers", "1"])
        _refusal(second, out, first.pid)
        # The refused run wrote nothing: what is there is the first run's (which only ever adds files).
        assert set(before) <= {p.relative_to(out) for p in out.rglob("*")}
    finally:
        _kill(first)
    resumed = CliRunner().invoke(cli, ["data", "prepare", "phoenix2014", "--root", str(raw_phoenix[1]), "--out",
                                       str(out), "--size", "72x72", "--workers", "1"])
    assert resumed.exit_code == 0, resumed.output
    assert (out / "vocab.json").is_file()


@pytest.mark.timeout(300)
@pytest.mark.slow
def test_a_second_training_run_or_resume_in_a_live_work_dir_is_refused(tiny_corpus, small_model, tmp_path):
    work = tmp_path / "run"
    common = [f"data.root={tiny_corpus[0]}", f"train.work_dir={work}", *small_model]
    first = subprocess.Popen([sys.executable, "-m", "qslr.tools.cli", "train", "--config", "synthetic", *common,
                              "train.max_steps=100000", "train.epochs=1000"], cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        _wait_until_held_by(work, first)
        for extra in ([], ["--resume", "auto"], ["--nproc", "2"]):
            result = CliRunner().invoke(cli, ["train", "--config", "synthetic", *extra, *common, "train.max_steps=1"])
            _refusal(result, work, first.pid)
        assert first.poll() is None  # the refusals did not disturb the first run
    finally:
        _kill(first)
    resumed = CliRunner().invoke(cli, ["train", "--config", "synthetic", "--resume", "auto", *common,
                                       "train.max_steps=1"])
    assert resumed.exit_code == 0, resumed.output
    assert (work / "checkpoints" / "last.pt").is_file()


@pytest.mark.timeout(300)
@pytest.mark.slow
def test_torchrun_ranks_share_their_launchers_lock_and_a_second_launch_is_refused(tiny_corpus, small_model,
                                                                                  tmp_path):
    work = tmp_path / "ddp"
    common = [f"data.root={tiny_corpus[0]}", f"train.work_dir={work}", *small_model, "train.max_steps=1"]
    with folder_lock(work, "work_dir"):
        refused = subprocess.run([sys.executable, "-m", "qslr.tools.cli", "train", "--config", "synthetic",
                                  "--nproc", "2", *common], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith(f"Error: {work}: work_dir in use by process {os.getpid()} "), line
    ran = subprocess.run([sys.executable, "-m", "qslr.tools.cli", "train", "--config", "synthetic", "--nproc", "2",
                          *common], cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert (work / "checkpoints" / "last.pt").is_file()
