"""CorrNet's and CorrNet+'s served graphs: exported, checked against PyTorch on mixed-length batches, accepted by
TensorRT's ONNX rules, batch-independent in onnxruntime (a clip's log-probabilities in a padded batch are those of the
clip alone), and answering alike in `qslr recognise` (PyTorch and onnxruntime) and from Triton; with correlations
that matter (the gates and the modules' weights, and CorrNet+'s lifting pools, not at their neutral start)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from qslr.deploy import tensor_names as names
from qslr.deploy.export.graph_checks import tensorrt_problems
from qslr.deploy.export.onnx_export import onnx_session
from qslr.deploy.frontends.recognise import LocalRecogniser, load_onnx_model
from qslr.deploy.served import example_inputs
from qslr.deploy.serving.buffered import WindowPlan, stitch
from qslr.deploy.serving.client import CslrClient
from qslr.deploy.serving.server import Ports, TritonServer, free_port
from qslr.model.checkpoints import input_spec_for
from qslr.model.lifting_pool import LiftingPool
from qslr.model.network import build_model
from qslr.pipelines.long_videos import choose_clips, join_clips
from qslr.pipelines.prepared import PreparedDataset
from qslr.pipelines.video_io import read_video, resize_frames
from qslr.tools.cli import cli
from qslr.train.checkpointing import model_sections, save_training_checkpoint
from qslr.train.config import load_config

FRAME = 72
# Each encoder on the synthetic preset, with what its presets add: CorrNet+ comes with its lifting pools.
ENCODERS = {"corrnet": ["model.frame_encoder.arch=corrnet_resnet18"],
            "corrnet_plus": ["model.frame_encoder.arch=corrnet_plus_resnet18", "model.temporal.pooling=lift"]}


@pytest.fixture(scope="module", params=list(ENCODERS))
def corrnet_checkpoint(request, tmp_path_factory) -> Path:
    # The BiLSTM as the CorrNet presets have it (no residual connection): the synthetic preset's is residual.
    config = load_config("synthetic", [*ENCODERS[request.param], "model.sequence.residual=false"])
    vocab = {f"G{i}": i + 1 for i in range(9)}
    torch.manual_seed(0)
    model = build_model(len(vocab) + 1, **model_sections(config)).eval()
    with torch.no_grad():  # correlations that change the features: at alpha 0 they would be a no-op
        for name, parameter in model.frame_encoder.named_parameters():
            if name.endswith("alpha"):
                parameter.fill_(0.7)
            elif name.startswith("corr") and name.endswith(("weights", "weights2")):
                parameter.uniform_(0.5, 1.0)
        for pool in (m for m in model.temporal.modules() if isinstance(m, LiftingPool)):
            for parameter in pool.parameters():  # the convolutions the original starts at 0
                if not parameter.any():
                    parameter.normal_(0.0, 0.1)
    spec = input_spec_for(config.model.temporal.kernels, config.data.crop_size, FRAME, FRAME, 25.0)
    path = tmp_path_factory.mktemp(request.param) / f"{request.param}.pt"
    save_training_checkpoint(path, model, config, vocab, spec, {})
    return path


@pytest.fixture(scope="module")
def corrnet_graph(corrnet_checkpoint, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("corrnet-onnx") / "model.onnx"
    # --check compares onnxruntime with PyTorch on batches of 1 x 8, 3 x 57 and 4 x 300 frames.
    result = CliRunner().invoke(cli, ["export", "onnx", "--checkpoint", str(corrnet_checkpoint), "--out", str(out),
                                      "--check"])
    assert result.exit_code == 0, result.output
    assert "max |difference|" in result.output
    return out


@pytest.mark.slow
def test_the_graph_passes_tensorrt_s_rules(corrnet_graph):
    assert tensorrt_problems(corrnet_graph) == []
    result = CliRunner().invoke(cli, ["export", "check", str(corrnet_graph)])
    assert result.exit_code == 0, result.output


@pytest.mark.slow
def test_a_clip_in_a_padded_batch_equals_the_clip_alone(corrnet_graph):
    session = onnx_session(corrnet_graph)
    frames, _ = example_inputs(3, 64, FRAME, FRAME, seed=5)
    lengths = np.array([64, 23, 41], dtype=np.int64)
    batch = dict(zip(names.INPUTS, (frames.numpy(), lengths), strict=True))
    together, steps = session.run(list(names.OUTPUTS), batch)[:2]
    for i, n in enumerate(lengths):
        alone, alone_steps = session.run(list(names.OUTPUTS), {names.FRAMES: frames[i:i + 1, :n].numpy(),
                                                               names.LENGTHS: lengths[i:i + 1]})[:2]
        assert steps[i] == alone_steps[0]
        assert np.abs(together[i, :steps[i]] - alone[0, :alone_steps[0]]).max() < 1e-4, i
    # The correlations are live: changing one clip's middle frame changes its neighbours' outputs.
    changed = frames.numpy().copy()
    changed[1, 11] = 255 - changed[1, 11]
    again = session.run(list(names.OUTPUTS), {**batch, names.FRAMES: changed})[0]
    assert np.abs(again[1, :steps[1]] - together[1, :steps[1]]).max() > 1e-3
    assert np.array_equal(again[0], together[0]) and np.array_equal(again[2], together[2])


@pytest.fixture(scope="module")
def joined_video(tiny_corpus, tmp_path_factory) -> Path:
    dataset = PreparedDataset(tiny_corpus[0])
    out = tmp_path_factory.mktemp("corrnet-long") / "joined.webm"
    join_clips(dataset, choose_clips(dataset, "train", 2), out)
    return out


@pytest.mark.slow
def test_a_long_video_in_batched_windows_gets_each_window_s_output_alone(corrnet_graph, joined_video):
    """Buffered recognition of a video longer than a window: its windows, run three to a batch, keep the steps each
    window gives alone (the encoder's reach and the lifting pools' statistics stop at a window's ends)."""
    plan = WindowPlan(48, 16, 4)
    output, _ = LocalRecogniser(load_onnx_model(corrnet_graph), windows=plan,
                                window_batch=3).outputs(joined_video)
    windows = plan.windows(output.frames)
    assert output.windows == len(windows) >= 4
    frames = resize_frames(read_video(joined_video)[0], FRAME, FRAME)
    session = onnx_session(corrnet_graph)
    alone = [session.run(list(names.OUTPUTS)[:2], {names.FRAMES: frames[w.start:w.stop][None],
                                                   names.LENGTHS: np.array([w.stop - w.start])}) for w in windows]
    expected = stitch(windows, [a[0][0] for a in alone], [int(a[1][0]) for a in alone])
    np.testing.assert_allclose(output.log_probs, expected, atol=1e-4)


@pytest.mark.slow
def test_recognised_locally_from_either_form_and_served_alike(corrnet_checkpoint, corrnet_graph, videos, tmp_path):
    def recognised(*source: str) -> list[list[str]]:
        result = CliRunner().invoke(cli, ["recognise", *source, "--json", *map(str, videos[:3])])
        assert result.exit_code == 0, result.output
        return [[g["gloss"] for g in json.loads(line)["glosses"]] for line in result.output.splitlines()
                if line.startswith("{")]

    expected = recognised("--checkpoint", str(corrnet_checkpoint))
    assert len(expected) == 3 and any(expected)  # random weights, but not an all-blank model
    assert recognised("--onnx", str(corrnet_graph)) == expected
    repository = tmp_path / "repo"
    built = CliRunner().invoke(cli, ["triton", "build", "--checkpoint", str(corrnet_checkpoint), "--out",
                                     str(repository), "--height", str(FRAME), "--width", str(FRAME),
                                     "--decoder", "pyav"])
    assert built.exit_code == 0, built.output
    with TritonServer(repository, Ports(free_port(), free_port(), free_port())) as server, \
            contextlib.closing(CslrClient(server.http_url)) as client:
        assert [client.recognise_file(video).glosses for video in videos[:3]] == expected
