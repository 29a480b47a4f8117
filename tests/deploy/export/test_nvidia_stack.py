"""The targeted NVIDIA release is named once in code; the extra and the Dockerfile must say the same."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from qslr.deploy.export import nvidia_stack
from qslr.deploy.export.tensorrt_engine import same_release

ROOT = Path(__file__).resolve().parents[3]


def test_the_tensorrt_extra_pins_the_containers_tensorrt():
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    pins = dict(re.fullmatch(r"([\w-]+)==([\w.]+)", requirement).groups()
                for requirement in extras["tensorrt"] if "==" in requirement)
    assert pins["tensorrt-cu13"] == nvidia_stack.TENSORRT_PIP_PIN
    assert pins["torch-tensorrt"] == nvidia_stack.TORCH_TENSORRT_PIN
    assert same_release(nvidia_stack.TENSORRT_PIP_PIN, nvidia_stack.TENSORRT_VERSION)


def test_the_dockerfile_builds_on_the_targeted_container():
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert re.search(r"^ARG TRITON_CONTAINER=(\S+)$", dockerfile, re.M).group(1) == nvidia_stack.TRITON_CONTAINER
    assert "FROM ${TRITON_CONTAINER}" in dockerfile
    documented = (ROOT / "docs" / "nvidia_versions.md").read_text()
    assert nvidia_stack.TRITON_CONTAINER in documented and nvidia_stack.TENSORRT_PIP_PIN in documented


def test_release_matching_needs_major_minor_and_patch():
    assert same_release("11.1.0.106", "11.1.0")
    assert not same_release("11.1.1", "11.1.0") and not same_release("10.13.3.9", "11.1.0")


def test_the_runtime_library_release_is_read_from_its_real_file_name(tmp_path):
    (tmp_path / "libnvinfer.so.11.1.0").write_bytes(b"")
    (tmp_path / "libnvinfer.so.11").symlink_to("libnvinfer.so.11.1.0")
    assert nvidia_stack.libnvinfer_version(str(tmp_path)) == "11.1.0"
    assert nvidia_stack.libnvinfer_version(str(tmp_path / "none")) is None


def test_the_dockerfile_checks_the_wheel_and_the_runtime_library_and_installs_dali():
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert "libnvinfer_version()" in dockerfile and "tensorrt.__version__" in dockerfile
    extras = re.search(r"\[([\w,]+)\]", dockerfile.split("pip install", 1)[1]).group(1).split(",")
    # preprocess's default decoder is DALI's, and --decoder dali-gpu is offered: the image needs the extra.
    assert {"serve", "tensorrt", "dali"} <= set(extras)


def test_the_image_and_every_documented_docker_run_give_the_container_nvdec():
    """NVDEC (`--decoder dali-gpu`) needs the driver's video library, which the NVIDIA container toolkit mounts only
    when the capabilities include `video`."""
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    capabilities = re.search(r"^ENV NVIDIA_DRIVER_CAPABILITIES=(\S+)$", dockerfile, re.M).group(1).split(",")
    assert {"compute", "utility", "video"} <= set(capabilities)
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    runs = [run for page in pages for run in re.findall(r"docker run (?:.*\\\n)*.*", page.read_text())]
    assert runs and all(re.search(r"-e NVIDIA_DRIVER_CAPABILITIES=\S*\bvideo\b", run) for run in runs), runs


def test_the_image_installs_the_wheel_not_the_source_tree():
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert "pip wheel" in dockerfile and "qslr-*.whl)[" in dockerfile
    assert not re.search(r"pip install[^\n]*\s-e\s", dockerfile) and '-e "' not in dockerfile
    # Every folder the wheel's packages are mapped from is copied into the build stage.
    tomllib = pytest.importorskip("tomllib")
    folders = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].values())
    assert {f for f in folders if f"COPY {f} ./{f}" in dockerfile} == folders
