"""A server started by a command stops with it: SIGTERM (a service manager, `kill`) and SIGHUP (a closed
terminal) sent to `qslr serve`, `qslr infer --serve` and `qslr web --serve`, while the server is still starting
or once it serves, leave no tritonserver and no python-backend stub behind."""

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
@pytest.mark.parametrize(("command", "sig", "when"), [
    ("infer", signal.SIGTERM, "starting"),
    ("infer", signal.SIGHUP, "starting"),
    ("web", signal.SIGTERM, "serving"),
    ("serve", signal.SIGHUP, "serving"),
])
def test_a_signal_to_the_command_stops_its_server(repository, videos, tmp_path, command, sig, when):
    own = tmp_path / "repo"  # a path of its own, so that only this command's processes name it
    shutil.copytree(repository, own)
    ports = [str(free_port()) for _ in range(3)]
    args = {"infer": ["infer", str(videos[0]), "--serve", str(own)],
            "web": ["web", "--serve", str(own), "--port", ports[0]],
            "serve": ["serve", str(own), "--http-port", ports[0], "--grpc-port", ports[1], "--metrics-port",
                      ports[2]]}[command]
    process = subprocess.Popen([sys.executable, "-m", "qslr.tools.cli", *args], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        if when == "starting":  # as soon as the server runs, before it is ready
            _until(lambda: any("tritonserver" in a for a in _processes_of(own)), 120, "tritonserver never started")
        else:  # once every python model's stub runs
            _until(lambda: sum("model.py" in a for a in _processes_of(own)) >= 3, 120, "the stubs never started")
            time.sleep(1.0)
        process.send_signal(sig)
        process.communicate(timeout=90)  # the command itself exits (TimeoutExpired otherwise)
    finally:
        if process.poll() is None:
            process.kill()
    _until(lambda: not _processes_of(own), 15, f"left behind after {sig.name}: {_processes_of(own)}")
