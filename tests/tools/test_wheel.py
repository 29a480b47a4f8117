"""QSLR as users install it: the wheel, installed without -e into a fresh environment, run from another folder.

The fresh environment reuses the dependencies already installed here (a .pth line naming this environment's
site-packages, which runs none of its own .pth files, so the editable install of the source tree is not seen),
and nothing of the source tree is on its path: what the commands find, the wheel brought.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from small_model import SMALL_MODEL

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Built from a copy of the files git would commit, as from a clean clone: setuptools builds in the tree it
    is given, and nothing of a build may be left in the checkout."""
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            check=True, capture_output=True, timeout=60).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    # No build isolation: setuptools is already here, and CI reaches PyPI only through the Makefile's install.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "--wheel-dir", str(out), str(source)], check=True, capture_output=True, timeout=300)
    (found,) = out.glob("qslr-*.whl")
    return found


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh virtual environment holding the wheel; its ``bin`` folder."""
    venv = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    (Path(site) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                    "--quiet", str(wheel)], check=True, capture_output=True, timeout=300)
    return venv / "bin"


def test_the_wheel_holds_one_package_with_its_data_and_no_tests(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    project, version = wheel.name.split("-")[:2]
    assert {name.split("/")[0] for name in names} == {"qslr", f"{project}-{version}.dist-info"}
    assert not [n for n in names if n.startswith("qslr/tests") or "/tests/" in n or "__pycache__" in n
                or n.endswith((".pyc", ".onnx", ".pt", ".plan"))]
    shipped = set(names)
    presets = {f"qslr/configs/{p.name}" for p in (REPO / "configs").glob("*.yaml")}
    templates = {f"qslr/triton_repo/{p.relative_to(REPO / 'triton_repo').as_posix()}"
                 for p in (REPO / "triton_repo").rglob("*") if p.suffix in (".template", ".py", ".md")
                 and "__pycache__" not in p.parts}
    static = {f"qslr/deploy/frontends/web/static/{p.name}" for p in (REPO / "deploy/frontends/web/static").iterdir()}
    assert len(presets) >= 6 and len(templates) >= 10 and len(static) >= 3
    assert presets | templates | static | {"qslr/deploy/export/tensorrt_onnx_operators.json"} <= shipped
    # Every module of the source packages is in the wheel under the one namespace.
    for folder in ("pipelines", "model", "train", "deploy", "tools"):
        modules = {f"qslr/{p.relative_to(REPO).as_posix()}" for p in (REPO / folder).rglob("*.py")}
        assert modules <= shipped, modules - shipped


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_installed_wheel_runs_the_pipeline_from_another_folder(installed, tmp_path):
    environment = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}
    environment["PATH"] = f"{installed}{os.pathsep}{environment['PATH']}"

    def qslr(*args: str) -> str:
        done = subprocess.run([str(installed / "qslr"), *args], cwd=tmp_path, env=environment, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, f"qslr {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout + done.stderr

    where = subprocess.run([str(installed / "python"), "-c", "import qslr.model.network as m; print(m.__file__)"],
                           cwd=tmp_path, env=environment, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(installed.parent)) and str(REPO) not in where
    qslr("data", "synth", "--out", "data", "--videos", "12", "--vocab", "6", "--signers", "5", "--heldout-signers",
         "2", "--max-glosses", "3", "--dev-fraction", "0.2", "--test-fraction", "0.2", "--workers", "1")
    qslr("train", "--config", "synthetic", "data.root=data", "train.work_dir=run", "train.max_steps=2", *SMALL_MODEL)
    checkpoint = "run/checkpoints/last.pt"
    assert "WER" in qslr("eval", "run", "--checkpoint", checkpoint, "--split", "test")
    qslr("export", "onnx", "--checkpoint", checkpoint, "--out", "model.onnx")
    assert '"tensorrt_problems": []' in qslr("export", "check", "model.onnx")
    qslr("triton", "build", "--checkpoint", checkpoint, "--out", "repo")
    assert (tmp_path / "repo" / "ctc_decoder" / "1" / "model.py").is_file()
    video = sorted((tmp_path / "data" / "videos" / "test").glob("*.webm"))[0]
    assert video.stem in qslr("recognise", "--checkpoint", checkpoint, str(video))
    refused = subprocess.run([str(installed / "qslr"), "train", "--config", "nosuch"], cwd=tmp_path, env=environment,
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "phoenix2014-vac" in refused.stderr and "synthetic" in refused.stderr


@pytest.mark.slow
def test_qslr_installs_beside_the_pytorch_already_there_as_documented(installed):
    """docs/nvidia_versions.md, "A machine that already has PyTorch": the wheel without its dependencies (the
    fixture's install), then the page's list, which must be the package's own dependencies less torch and
    torchvision. Here, where all of them are present, the list installs nothing, and PyTorch stays the one there."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    def named(requirements):
        return {(canonicalize_name(r.name), str(r.specifier)) for r in map(Requirement, requirements)}

    page = (REPO / "docs" / "nvidia_versions.md").read_text().split("## A machine that already has PyTorch")[1]
    package, dependencies = page.split("```bash")[1].split("```")[0].strip().split("\npip install ")
    assert package.startswith("pip install --no-deps qslr-")
    documented = dependencies.split("'")[1::2]
    python = str(installed / "python")

    def ask(code: str) -> str:
        return subprocess.run([python, "-c", code], check=True, capture_output=True, text=True).stdout.strip()

    declared = [line for line in ask("import importlib.metadata as m; print(*m.requires('qslr'), sep='\\n')")
                .splitlines() if "extra ==" not in line]
    pytorch = ("torch", "torchvision")
    assert {name for name, _ in named(declared)} >= set(pytorch)
    assert named(documented) == {(name, spec) for name, spec in named(declared) if name not in pytorch}
    assert len(documented) == len(declared) - 2 >= 8
    done = subprocess.run([sys.executable, "-m", "pip", "--python", python, "install", "--no-index", *documented],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Successfully installed" not in done.stdout
    own = sorted(path.name for path in Path(ask("import sysconfig; print(sysconfig.get_paths()['purelib'])")).iterdir())
    assert not [name for name in own if name.startswith(("torch", "nvidia"))], own
    # The PyTorch that was there before.
    assert ask("import torch; print(torch.__file__)").startswith(sysconfig.get_paths()["purelib"])
