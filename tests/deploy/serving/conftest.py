"""Triton's python models run in this process: the stand-in of python_backend in tests/resources/pb_utils_standin
loads a built repository's model.py files and serves them, BLS calls included, in milliseconds."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

STANDIN = Path(__file__).parents[2] / "resources" / "pb_utils_standin"


def _standin_server_module():
    if "standin_server" not in sys.modules:
        spec = importlib.util.spec_from_file_location("standin_server", STANDIN / "standin_server.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["standin_server"] = module
        spec.loader.exec_module(module)
    return sys.modules["standin_server"]


def _shipped_utils() -> Path:
    path = _standin_server_module().shipped_utils()
    if path is None:
        pytest.skip("nvidia-pytriton, whose triton_python_backend_utils.py the stand-in completes, is not installed")
    return path


@pytest.fixture
def standin_folder() -> Path:
    """The stand-in's folder, for a test that loads it in another process."""
    return STANDIN


@pytest.fixture
def pb_utils():
    """The `triton_python_backend_utils` a python model imports, as the stand-in gives it."""
    return _standin_server_module().python_backend_utils(_shipped_utils())


@pytest.fixture
def standin(repository):
    """``standin(root=<the session's repository>, gpu_models=())``: a StandinServer over a built repository,
    closed (its models finalised) after the test."""
    module = _standin_server_module()
    _shipped_utils()
    servers = []

    def start(root: Path = repository, gpu_models=()):
        server = module.StandinServer(root, frozenset(gpu_models))
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()
