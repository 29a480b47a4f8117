"""A real tritonserver's lifecycle: started on a repository (the binary `server_binary` finds), ready, watched for
dead python stubs, stopped with every process and shared-memory region it left."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from qslr.deploy import model_names as models
from qslr.deploy.serving import processes
from qslr.deploy.serving.server_binary import ServerError, check_backends, find_server, required_backends

log = logging.getLogger(__name__)
SHM_FOLDER = Path("/dev/shm")


@dataclass(frozen=True)
class Ports:
    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def is_ready(http_url: str) -> bool:
    """Whether the server at ``http_url`` (host:port) says it is ready (Triton's /v2/health/ready)."""
    try:
        with urllib.request.urlopen(f"http://{http_url}/v2/health/ready", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


class TritonServer:
    """A tritonserver process on 127.0.0.1 (by default); use as a context manager."""

    def __init__(self, repository: str | Path, ports: Ports = Ports(), host: str = "127.0.0.1",
                 startup_timeout: float = 120.0, log_to: object | None = None):
        self.repository, self.ports, self.host = Path(repository), ports, host
        self.startup_timeout, self.log_to = startup_timeout, log_to
        self.process: subprocess.Popen | None = None
        self.log_tail: deque[str] = deque(maxlen=60)
        self._workdir: tempfile.TemporaryDirectory | None = None
        self._regions: set[str] = set()  # shared memory of this server's stubs, removed when it stops
        self.stubs: dict[int, str] = {}
        self.python_models: set[str] = set()

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.ports.http}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.ports.grpc}"

    def start(self) -> TritonServer:
        if not (self.repository / models.CSLR / "config.pbtxt").is_file():
            raise ServerError(f"{self.repository}: not a QSLR model repository (build one with `qslr triton build`)")
        for name, port in vars(self.ports).items():
            if port_in_use(self.host, port):
                raise ServerError(f"{name} port {port} on {self.host} is already in use")
        self._workdir = tempfile.TemporaryDirectory(prefix="qslr-triton-")
        binary = find_server(Path(self._workdir.name))
        try:
            check_backends(self.repository, binary)
        except ServerError:
            self._workdir.cleanup()
            self._workdir = None
            raise
        command = [str(binary.executable), f"--model-repository={self.repository}",
                   f"--http-address={self.host}", f"--grpc-address={self.host}", f"--http-port={self.ports.http}",
                   f"--grpc-port={self.ports.grpc}", f"--metrics-port={self.ports.metrics}", "--allow-metrics=false",
                   "--exit-on-error=true", "--strict-readiness=true",
                   # Idle keep-alive connections of finished clients would otherwise hold a shutdown for 30 s.
                   "--exit-timeout-secs=5"]
        if binary.backend_dir:
            command.append(f"--backend-directory={binary.backend_dir}")
        if binary.cache_dir:
            command.append(f"--cache-directory={binary.cache_dir}")
        log.info("starting %s", " ".join(command))
        self.process = subprocess.Popen(command, env=binary.environment, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, start_new_session=True)
        threading.Thread(target=self._pump, daemon=True).start()
        try:
            self._wait_ready()
        except BaseException:
            # Interrupted while starting (Ctrl-C, or a signal exit_on_signals turned into one): the server runs
            # in a session of its own, so nothing else would stop it.
            self.stop()
            raise
        return self

    def _pump(self) -> None:
        assert self.process and self.process.stdout
        for line in self.process.stdout:
            self.log_tail.append(line.rstrip())
            if self.log_to is not None:
                print(line, end="", file=self.log_to, flush=True)

    def ready(self) -> bool:
        return is_ready(self.http_url)

    def _wait_ready(self) -> None:
        # A server missing libraries hangs instead of exiting: never wait without a deadline.
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            # Each stub's shared memory, seen as the models load: a stub may die before the server is ready.
            self._regions |= processes.shm_regions(self._own_stubs())
            if self.process.poll() is not None:
                tail = "\n".join(list(self.log_tail)[-15:])
                self.stop()
                raise ServerError(f"tritonserver exited with code {self.process.returncode} while starting:\n{tail}")
            if self.ready():
                log.info("tritonserver ready on %s (HTTP) and %s (gRPC)", self.http_url, self.grpc_url)
                self.stubs = processes.python_stubs(self.process.pid)
                self._regions |= processes.shm_regions(self.stubs)
                self.python_models = {model for model, backend in required_backends(self.repository).items()
                                      if backend == "python"}
                return
            time.sleep(0.3)
        tail = "\n".join(list(self.log_tail)[-15:])
        self.stop()
        raise ServerError(f"tritonserver was not ready after {self.startup_timeout:.0f} s:\n{tail}")

    def dead_models(self) -> list[str]:
        """Python models one of whose stub processes has died since the server became ready.

        One look at the server's processes answers both ways a stub can be missing: one seen at readiness that is
        gone (or a zombie, which has no command line), and a model with no live stub at all, which covers a stub
        killed between the server's readiness and that first look.
        """
        if self.process is None or not processes.processes_visible():
            return []  # no stub can be told dead where no process can be seen
        live = processes.python_stubs(self.process.pid)
        dead = {model for pid, model in self.stubs.items() if pid not in live}
        return sorted(dead | (self.python_models - set(live.values())))

    def _own_stubs(self) -> list[int]:
        """This server's stub processes (among its children), and any left running from its own backend folder."""
        own = list(processes.child_processes(self.process.pid)) if self.process else []
        if self._workdir:
            own += processes.processes_running(Path(self._workdir.name))
        return own

    def stop(self) -> None:
        self._regions |= processes.shm_regions(self._own_stubs())
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        # A server stopped while it was loading its models can leave stubs it had started running, orphaned:
        # they are found by the backend folder made for this server alone.
        if self._workdir:
            for pid in processes.processes_running(Path(self._workdir.name)):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        # A killed python backend leaves its shared-memory regions behind. Only this server's own: another server
        # started meanwhile (a second test session, another user's) keeps its regions.
        for region in self._regions:
            with contextlib.suppress(OSError):
                (SHM_FOLDER / region).unlink()
        self._regions = set()
        if self._workdir:
            self._workdir.cleanup()
            self._workdir = None

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
