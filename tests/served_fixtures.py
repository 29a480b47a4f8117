"""Served repositories of the session's small checkpoint and one real tritonserver for each, started once: the
default repository and a variant one (the INT8 graph, a visual batch limit below the served one, two instances of
each python model); the checkpoint's float32 and INT8 graphs; test videos."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from served_settings import (
    CALIBRATION_CLIPS,
    MAX_FRAMES,
    MAX_SECONDS,
    VARIANT_BATCH,
    VARIANT_INSTANCES,
    VARIANT_VISUAL_BATCH,
)

from qslr.deploy.export.onnx_export import export_onnx
from qslr.deploy.served_limits import ServedLimits
from qslr.deploy.serving.server import Ports, TritonServer, free_port
from qslr.deploy.serving.triton_repository import RepositorySettings, build_repository
from qslr.pipelines.prepared import PreparedDataset
from qslr.pipelines.video_io import read_video
from qslr.tools.cli import cli
from qslr.tools.damaged_videos import container_variants


@pytest.fixture(scope="session")
def fp32_graph(checkpoint, tmp_path_factory) -> Path:
    """The session checkpoint exported to a float32 ONNX graph at the tiny corpus's 72x72 frames."""
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx(checkpoint, path, 72, 72)
    return path


@pytest.fixture(scope="session")
def int8_graph(checkpoint, tiny_corpus, tmp_path_factory) -> Path:
    """The session checkpoint's INT8 graph, calibrated on its training clips by `qslr export onnx --int8`."""
    out = tmp_path_factory.mktemp("int8") / "model.int8.onnx"
    result = CliRunner().invoke(cli, ["export", "onnx", "--checkpoint", str(checkpoint), "--out", str(out), "--int8",
                                      "--calibration-data", str(tiny_corpus[0]), "--calibration-clips",
                                      str(CALIBRATION_CLIPS)])
    assert result.exit_code == 0, result.output
    assert f"int8 (minmax calibration on {CALIBRATION_CLIPS} clips)" in result.output
    assert "greedy labels agree on" in result.output
    fused = re.search(r"onnxruntime runs (\d+) of (\d+) convolutions in INT8 \(QLinearConv\); (\d+) ReLUs stay float32",
                      result.output)
    assert fused and fused[1] == fused[2] and int(fused[1]) >= 3 and fused[3] == "0", result.output
    return out


@pytest.fixture(scope="session")
def variant_repository(checkpoint, int8_graph, tmp_path_factory) -> Path:
    """`qslr triton build` with the options that change what the server runs: the INT8 graph in the visual model,
    its batch limit below the served one, two instances of preprocess, visual and ctc_decoder, PyAV decoding."""
    out = tmp_path_factory.mktemp("variant") / "repo"
    instances = str(VARIANT_INSTANCES)
    result = CliRunner().invoke(cli, [
        "triton", "build", "--checkpoint", str(checkpoint), "--out", str(out), "--onnx", str(int8_graph),
        "--height", "72", "--width", "72", "--decoder", "pyav", "--max-frames", str(MAX_FRAMES), "--max-duration",
        str(MAX_SECONDS), "--max-batch-size", str(VARIANT_BATCH), "--visual-max-batch-size",
        str(VARIANT_VISUAL_BATCH), "--visual-instances", instances, "--preprocess-instances", instances,
        "--decoder-instances", instances, "--max-queue-delay-us", "20000"])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="session")
def variant_server(variant_repository):
    with TritonServer(variant_repository, Ports(free_port(), free_port(), free_port())) as running:
        yield running


@pytest.fixture(scope="session")
def repository(checkpoint, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("repo") / "cslr-repo"
    settings = RepositorySettings(limits=ServedLimits(max_frames=MAX_FRAMES, max_seconds=MAX_SECONDS),
                                  max_queue_delay_us=20000)
    build_repository(checkpoint, out, settings, 72, 72)
    return out


@pytest.fixture(scope="session")
def server(repository):
    with TritonServer(repository, Ports(free_port(), free_port(), free_port())) as running:
        yield running


@pytest.fixture(scope="session")
def videos(tiny_corpus) -> list[Path]:
    dataset = PreparedDataset(tiny_corpus[0])
    records = [r for split in ("test", "dev", "train") for r in dataset.records(split) if r.num_frames <= MAX_FRAMES]
    return [dataset.video_path(r) for r in records]


@pytest.fixture(scope="session")
def upload_variants(videos) -> dict[str, bytes]:
    """One test video as uploaded: its WebM file, and its first 24 frames in MKV/VP9, MP4/H.264 and AVI/MJPEG."""
    frames, _ = read_video(videos[0])
    return {"webm": Path(videos[0]).read_bytes(), **container_variants(frames[:24])}
