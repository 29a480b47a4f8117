"""Which tritonserver runs a repository: the one on PATH (NVIDIA's container), else the binary in nvidia-pytriton.

The wheel's server needs a backend folder holding the python backend and the stub for this Python, this
virtual environment first on PATH (the stub takes its sys.path from the first python3 there), and the
wheel's libraries plus this interpreter's libpython on LD_LIBRARY_PATH (docs/serving_gpu.md, "The CPU server").
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path


class ServerError(RuntimeError):
    pass


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
