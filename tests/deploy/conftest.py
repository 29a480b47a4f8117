"""A served repository of the session's small checkpoint, one real tritonserver for it, and test videos."""

from __future__ import annotations

from pathlib import Path

import pytest
from served_settings import MAX_FRAMES, MAX_SECONDS

from qslr.deploy.export.onnx_export import export_onnx
from qslr.deploy.served_limits import ServedLimits
from qslr.deploy.serving.server import Ports, TritonServer, free_port
from qslr.deploy.serving.triton_repository import RepositorySettings, build_repository
from qslr.pipelines.prepared import PreparedDataset
from qslr.pipelines.video_io import read_video
from qslr.tools.damaged_videos import container_variants


@pytest.fixture(scope="session")
def fp32_graph(checkpoint, tmp_path_factory) -> Path:
    """The session checkpoint exported to a float32 ONNX graph at the tiny corpus's 72x72 frames."""
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx(checkpoint, path, 72, 72)
    return path


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
