"""Starting a real tritonserver: the one on PATH (NVIDIA's container), else the binary in nvidia-pytriton.

The wheel's server needs a backend folder holding the python backend and the stub for this Python, this
virtual environment first on PATH (the stub takes its sys.path from the first python3 there), and the
wheel's libraries plus this interpreter's libpython on LD_LIBRARY_PATH (docs/serving_gpu.md, "The CPU server").
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.request
from collections import deque
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)
SHM_PATTERN = "/dev/shm/triton_python_backend_shm_region_*"


class ServerError(RuntimeError):
    pass


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


@dataclass(frozen=True)
class ServerBinary:
    executable: Path
    backend_dir: Path | None  # None: the binary's own (NVIDIA's container)
    cache_dir: Path | None
    environment: dict[str, str]
    backends: frozenset[str] | None = None  # None: not known (a server on PATH without a backends folder)


# What a model config's platform needs of the server, for configs that name a platform instead of a backend.
_PLATFORM_BACKENDS = {"tensorrt_plan": "tensorrt", "onnxruntime_onnx": "onnxruntime", "pytorch_libtorch": "pytorch",
                      "ensemble": None}


def required_backends(repository: Path) -> dict[str, str]:
    """model name -> the backend its config asks for (ensembles need none)."""
    from qslr.deploy.serving.repository_checks import read_config

    needed = {}
    for config_path in sorted(repository.glob("*/config.pbtxt")):
        config = read_config(config_path)
        backend = config.backend or _PLATFORM_BACKENDS.get(config.platform, config.platform)
        if backend:
            needed[config.name or config_path.parent.name] = backend
    return needed


def _installed_backends(executable: Path) -> frozenset[str] | None:
    """The backends beside a tritonserver on PATH (NVIDIA's container keeps them in <prefix>/backends)."""
    folder = executable.resolve().parent.parent / "backends"
    return frozenset(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else None


def _pytriton_root() -> Path | None:
    try:
        import pytriton
    except ImportError:
        return None
    return Path(pytriton.__file__).parent / "tritonserver"


def find_server(workdir: Path) -> ServerBinary:
    """The tritonserver to run, with what it needs prepared under ``workdir``."""
    on_path = shutil.which("tritonserver")
    if on_path:
        return ServerBinary(Path(on_path), None, None, dict(os.environ), _installed_backends(Path(on_path)))
    root = _pytriton_root()
    if root is None or not (root / "bin" / "tritonserver").is_file():
        raise ServerError("no tritonserver found: none on PATH and nvidia-pytriton is not installed "
                          "(pip install -e '.[serve]')")
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise ServerError(f"nvidia-pytriton has no python backend stub for Python {version}")
    backend = workdir / "backends" / "python"
    backend.mkdir(parents=True)
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        shutil.copy2(root / "backends" / "python" / name, backend / name)
    shutil.copy2(stub, backend / "triton_python_backend_stub")
    environment = dict(os.environ)
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment.get('PATH', '')}"
    libraries = [sysconfig.get_config_var("LIBDIR"), str(root.parent.parent / "nvidia_pytriton.libs"),
                 environment.get("LD_LIBRARY_PATH", "")]
    environment["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in libraries if p)
    return ServerBinary(root / "bin" / "tritonserver", workdir / "backends", root / "caches", environment,
                        frozenset({"python"}))


def check_backends(repository: Path, binary: ServerBinary) -> None:
    """Refuse, in one line, a repository whose models this server cannot load: it would abort at start-up."""
    if binary.backends is None:
        return
    missing = {model: backend for model, backend in required_backends(repository).items()
               if backend not in binary.backends}
    if missing:
        from qslr.deploy.export.nvidia_stack import TRITON_CONTAINER

        models = ", ".join(f"{model} needs the {backend} backend" for model, backend in sorted(missing.items()))
        raise ServerError(f"{repository}: {models}, which {binary.executable} does not have (it has "
                          f"{', '.join(sorted(binary.backends))}); serve it with NVIDIA's Triton container "
                          f"{TRITON_CONTAINER} (deploy/Dockerfile)")


def python_stubs(server_pid: int) -> dict[int, str]:
    """pid -> model name of each python-backend stub process the server started (Linux's /proc; empty elsewhere).

    The server does not restart a stub that died: its model answers every request with an error while the
    server still reports itself ready, so whoever runs the server has to watch the stubs.
    """
    return {pid: Path(args[1]).parent.parent.name  # <repository>/<model>/1/model.py
            for pid, args in child_processes(server_pid).items()
            if len(args) > 1 and args[0].endswith("triton_python_backend_stub")}


@contextlib.contextmanager
def exit_on_signals(signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGHUP)):
    """Within the block, SIGTERM and SIGHUP end the command as Ctrl-C does (KeyboardInterrupt), so that every
    `with` in it unwinds: a server it started (in a session of its own, out of reach of signals sent to the
    command) is stopped, stubs included, rather than left running without its command."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")

    previous = {sig: signal.signal(sig, interrupt) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _processes() -> dict[int, tuple[int, list[str]]]:
    """pid -> (parent pid, command line) of every process (Linux's /proc; empty elsewhere)."""
    found = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            found[int(entry.name)] = (parent, (entry / "cmdline").read_bytes().decode(errors="replace").split("\0"))
        except (OSError, ValueError, IndexError):
            continue  # a process that ended while being looked at
    return found


def child_processes(parent_pid: int) -> dict[int, list[str]]:
    """pid -> command line of each process whose parent is ``parent_pid``."""
    return {pid: args for pid, (parent, args) in _processes().items() if parent == parent_pid}


def _processes_running(folder: Path) -> list[int]:
    """Processes whose program lies in ``folder``."""
    return [pid for pid, (_, args) in _processes().items() if args[0].startswith(f"{folder}/")]


class TritonServer:
    """A tritonserver process on 127.0.0.1 (by default); use as a context manager."""

    def __init__(self, repository: str | Path, ports: Ports = Ports(), host: str = "127.0.0.1",
                 startup_timeout: float = 120.0, log_to: object | None = None):
        self.repository, self.ports, self.host = Path(repository), ports, host
        self.startup_timeout, self.log_to = startup_timeout, log_to
        self.process: subprocess.Popen | None = None
        self.log_tail: deque[str] = deque(maxlen=60)
        self._workdir: tempfile.TemporaryDirectory | None = None
        self._shm_before: set[str] = set()
        self.stubs: dict[int, str] = {}
        self.python_models: set[str] = set()

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.ports.http}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.ports.grpc}"

    def start(self) -> TritonServer:
        if not (self.repository / "cslr" / "config.pbtxt").is_file():
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
        self._shm_before = set(glob.glob(SHM_PATTERN))
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
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def _wait_ready(self) -> None:
        # A server missing libraries hangs instead of exiting: never wait without a deadline.
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = "\n".join(list(self.log_tail)[-15:])
                self.stop()
                raise ServerError(f"tritonserver exited with code {self.process.returncode} while starting:\n{tail}")
            if self.ready():
                log.info("tritonserver ready on %s (HTTP) and %s (gRPC)", self.http_url, self.grpc_url)
                self.stubs = python_stubs(self.process.pid)
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
        if self.process is None or not Path("/proc").is_dir():
            return []  # python_stubs sees nothing without /proc: no stub can be told dead
        live = python_stubs(self.process.pid)
        dead = {model for pid, model in self.stubs.items() if pid not in live}
        return sorted(dead | (self.python_models - set(live.values())))

    def stop(self) -> None:
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
            for pid in _processes_running(Path(self._workdir.name)):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        # A killed python backend leaves its shared-memory regions behind.
        for leftover in set(glob.glob(SHM_PATTERN)) - self._shm_before:
            with contextlib.suppress(OSError):
                os.unlink(leftover)
        if self._workdir:
            self._workdir.cleanup()
            self._workdir = None

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
