"""A server started by a command stops with it: SIGTERM (a service manager, `kill`) and SIGHUP (a closed
terminal) sent to the command leave no tritonserver and no python-backend stub behind, and the command ends as
Ctrl-C ends it: aborted (status 1) while its server was still starting, stopped as asked (status 0) once `qslr
serve` serves. One real case per signal kind; `qslr web --serve` stopped by SIGTERM is in test_web, and the signal
mechanism itself (exit_on_signals) is tested in-process in test_supervision."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qslr.deploy.serving.server import free_port

REPO = Path(__file__).resolve().parents[3]


def _processes_of(repository: Path) -> list[str]:
    """Command lines of the servers naming ``repository``: its tritonserver (--model-repository=...) and stubs
    (<repository>/<model>/1/model.py); the qslr command itself names it too, and is not one of them."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if any(a == f"--model-repository={repository}" or a.startswith(f"{repository}/") for a in args):
            found.append(" ".join(args))
    return found


def _until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize(("command", "sig", "when", "status"), [
    ("infer", signal.SIGTERM, "starting", 1),
    ("serve", signal.SIGHUP, "serving", 0),
])
def test_a_signal_to_the_command_stops_its_server(repository, videos, tmp_path, command, sig, when, status):
    own = tmp_path / "repo"  # a path of its own, so that only this command's processes name it
    shutil.copytree(repository, own)
    ports = [str(free_port()) for _ in range(3)]
    args = {"infer": ["infer", str(videos[0]), "--serve", str(own)],
            "serve": ["serve", str(own), "--http-port", ports[0], "--grpc-port", ports[1], "--metrics-port",
                      ports[2]]}[command]
    process = subprocess.Popen([sys.executable, "-m", "qslr.tools.cli", *args], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    ready = {"infer": "tritonserver ready on", "serve": f"serving {own} on http://"}[command]
    before = []
    try:
        if when == "starting":  # as soon as the server runs, before it is ready
            _until(lambda: any("tritonserver" in a for a in _processes_of(own)), 120, "tritonserver never started")
        else:  # once the command says it serves
            for line in process.stdout:
                before.append(line)
                if ready in line:
                    break
        process.send_signal(sig)
        output, _ = process.communicate(timeout=90)  # the command itself exits (TimeoutExpired otherwise)
        output = "".join(before) + output
    finally:
        if process.poll() is None:
            process.kill()
    _until(lambda: not _processes_of(own), 15, f"left behind after {sig.name}: {_processes_of(own)}")
    assert process.returncode == status, output
    # The signal came when it was meant to: before the server was ready, or while it served.
    assert (ready in output) == (when == "serving"), output
    if when == "starting":
        assert output.rstrip().endswith("Aborted!"), output
