"""The TensorRT variant of the repository, checked on a CPU: its config against the exported graph, the engine's
recorded TensorRT version and profile against the repository's target and limits, and a server that cannot load it.

No engine can be built here. The engine files below hold bytes that nothing on a CPU reads; what these tests
exercise is everything the builder and the launcher decide from the engine's record and the exported graph.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner
from tritonclient.grpc import model_config_pb2

from qslr.deploy.export.nvidia_stack import TENSORRT_VERSION, TRITON_CONTAINER
from qslr.deploy.export.tensorrt_engine import EngineMismatchError, EngineRecord, ShapeRange, write_engine_record
from qslr.deploy.served_limits import ServedLimits
from qslr.deploy.serving.repository_checks import config_problems, read_config
from qslr.deploy.serving.server import Ports, ServerError, TritonServer, free_port
from qslr.deploy.serving.server_binary import required_backends
from qslr.deploy.serving.triton_repository import RepositorySettings, build_repository
from qslr.model.checkpoints import load_checkpoint
from qslr.tools.cli import cli

LIMITS = ServedLimits(min_frames=16, max_frames=240, max_batch=8)


def engine_file(folder: Path, version: str = TENSORRT_VERSION, profile: ShapeRange | None = None,
                size: tuple[int, int] = (72, 72)) -> Path:
    plan = folder / "model.plan"
    plan.write_bytes(b"TensorRT plan bytes: never deserialised on a CPU")
    write_engine_record(plan, EngineRecord(version, profile or ShapeRange.covering(LIMITS), *size, "fp16",
                                           "model.onnx"))
    return plan


@pytest.fixture(scope="module")
def tensorrt_repository(checkpoint, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("trt-repo")
    out = folder / "repo"
    build_repository(checkpoint, out, RepositorySettings(visual="tensorrt", limits=LIMITS), 72, 72,
                     engine=engine_file(folder))
    return out


def test_the_tensorrt_config_describes_the_exported_graph(tensorrt_repository, fp32_graph, checkpoint):
    visual = tensorrt_repository / "visual"
    config = read_config(visual / "config.pbtxt")
    assert config.platform == "tensorrt_plan" and config.max_batch_size == LIMITS.max_batch
    assert config_problems(config, onnx.load(str(fp32_graph))) == []
    assert sorted(p.name for p in (visual / "1").iterdir()) == ["model.plan"]
    classes = load_checkpoint(checkpoint).model.num_classes
    assert [list(o.dims) for o in config.output] == [[-1, classes], [1]]
    parameters = {key: value.string_value for key, value in config.parameters.items()}
    assert (parameters["min_frames"], parameters["max_frames"]) == ("16", "240")
    record = json.loads((tensorrt_repository / "qslr-repository.json").read_text())["tensorrt"]
    assert record == {"engine_version": TENSORRT_VERSION, "target_version": TENSORRT_VERSION,
                      "triton_container": TRITON_CONTAINER}


def test_every_model_follows_the_same_served_limits(tensorrt_repository):
    for name in ("preprocess", "visual", "ctc_decoder", "cslr_clip", "cslr", "cslr_frames"):
        config = read_config(tensorrt_repository / name / "config.pbtxt")
        assert config.max_batch_size == LIMITS.max_batch, name
        if "max_frames" in config.parameters:
            assert config.parameters["max_frames"].string_value == str(LIMITS.max_frames), name
            assert config.parameters["min_frames"].string_value == str(LIMITS.min_frames), name


def test_the_config_check_finds_what_the_tensorrt_backend_would_refuse(tensorrt_repository, fp32_graph):
    graph = onnx.load(str(fp32_graph))
    config = read_config(tensorrt_repository / "visual" / "config.pbtxt")
    config.input[0].data_type = model_config_pb2.TYPE_FP32
    config.input[1].ClearField("reshape")  # lengths [B, 1] against the graph's [B]
    config.output[0].dims[1] += 1  # one class too many
    config.output[1].name = "lengths_out"
    problems = "\n".join(config_problems(config, graph))
    assert "input frames: TYPE_FP32 in the config, UINT8 in the graph" in problems
    assert "input lengths: rank 2" in problems
    assert "output log_probs: dimension 2 is" in problems
    assert "output lengths_out: the graph has no such tensor" in problems


@pytest.mark.parametrize(("record", "message"), [
    ({"version": "10.13.3"}, f"built with TensorRT 10.13.3, the repository targets TensorRT {TENSORRT_VERSION}"),
    ({"profile": ShapeRange(1, 4, 8, 16, 140, 200)}, "ends at 200 frames, the served maximum is 240"),
    ({"profile": ShapeRange(1, 4, 8, 32, 140, 240)}, "starts at 32 frames, clips are padded only to 16"),
    ({"size": (96, 96)}, "takes 96x96 frames, the model 72x72"),
])
def test_the_builder_refuses_an_engine_it_could_not_serve(checkpoint, tmp_path, record, message):
    plan = engine_file(tmp_path, **record)
    with pytest.raises(EngineMismatchError, match=message):
        build_repository(checkpoint, tmp_path / "r", RepositorySettings(visual="tensorrt", limits=LIMITS), 72, 72,
                         engine=plan)
    assert not (tmp_path / "r").exists()


def test_the_builder_refuses_an_engine_without_its_record(checkpoint, tmp_path):
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"an engine of unknown origin")
    result = CliRunner().invoke(cli, ["triton", "build", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "r"),
                                      "--visual", "tensorrt", "--engine", str(plan), "--height", "72", "--width",
                                      "72"])
    assert result.exit_code == 1 and "no engine record model.plan.json" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_the_python_server_refuses_a_tensorrt_repository_in_one_line(tensorrt_repository):
    assert required_backends(tensorrt_repository) == {"visual": "tensorrt", "preprocess": "python",
                                                      "ctc_decoder": "python", "cslr": "python"}
    with pytest.raises(ServerError) as error:
        TritonServer(tensorrt_repository, Ports(free_port(), free_port(), free_port())).start()
    assert "visual needs the tensorrt backend" in str(error.value) and TRITON_CONTAINER in str(error.value)
    result = CliRunner().invoke(cli, ["serve", str(tensorrt_repository), "--http-port", str(free_port()),
                                      "--grpc-port", str(free_port()), "--metrics-port", str(free_port())])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output


def test_default_engine_profile_covers_the_default_limits():
    assert ShapeRange.covering(ServedLimits()).uncovered(ServedLimits()) == []
    help_text = CliRunner().invoke(cli, ["export", "tensorrt", "--help"]).output
    limits = ServedLimits()
    assert f"{limits.max_batch}x{limits.max_frames}" in help_text and f"1x{limits.min_frames}" in help_text


def test_the_visual_models_batch_may_be_set_below_the_served_one(checkpoint, tmp_path):
    """An engine whose profile ends at batch 2 serves in a repository of served batch 8 when the visual model is
    limited to 2; the ensembles follow it (Triton refuses an ensemble allowing more than a model inside it), the
    python models around it keep the served batch."""
    settings = RepositorySettings(visual="tensorrt", limits=LIMITS, visual_max_batch=2)
    out = build_repository(checkpoint, tmp_path / "r", settings, 72, 72,
                           engine=engine_file(tmp_path, profile=ShapeRange(1, 2, 2, 16, 140, 240)))
    batches = {name: read_config(out / name / "config.pbtxt").max_batch_size
               for name in ("preprocess", "visual", "ctc_decoder", "cslr_clip", "cslr", "cslr_frames")}
    assert batches == {"preprocess": 8, "visual": 2, "ctc_decoder": 8, "cslr_clip": 2, "cslr": 2, "cslr_frames": 2}
    parameters = read_config(out / "cslr" / "config.pbtxt").parameters
    assert parameters["window_batch"].string_value == "2"  # no more windows at once than the visual model takes
    with pytest.raises(EngineMismatchError, match="ends at batch 2, the served maximum is 4"):
        build_repository(checkpoint, tmp_path / "r4", RepositorySettings(visual="tensorrt", limits=LIMITS,
                                                                         visual_max_batch=4), 72, 72,
                         engine=engine_file(tmp_path, profile=ShapeRange(1, 2, 2, 16, 140, 240)))
    # Unless told, the visual model takes the engine's batch where it is below the served one: `qslr export
    # tensorrt` lowers it to what TensorRT can hold, and the defaults of both commands must make a repository.
    out = build_repository(checkpoint, tmp_path / "default", RepositorySettings(visual="tensorrt", limits=LIMITS),
                           72, 72, engine=engine_file(tmp_path, profile=ShapeRange(1, 2, 3, 16, 140, 240)))
    assert read_config(out / "visual" / "config.pbtxt").max_batch_size == 3
    assert read_config(out / "cslr_clip" / "config.pbtxt").max_batch_size == 3
    assert read_config(out / "preprocess" / "config.pbtxt").max_batch_size == 8
    with pytest.raises(ValueError, match="must be 1..8"):
        build_repository(checkpoint, tmp_path / "r9", RepositorySettings(limits=LIMITS, visual_max_batch=9), 72, 72)
