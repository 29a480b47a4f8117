"""INT8 export: one QDQ graph (which nodes are quantised, zero points, axes), TensorRT's quantisation rules, its
outputs against float32 on held-out clips, batch independence and length exactness, and the same answers served
by Triton as from `qslr recognise --onnx`."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from onnx import numpy_helper
from served_settings import CALIBRATION_CLIPS

from qslr.deploy import tensor_names as names
from qslr.deploy.export.graph_checks import tensorrt_problems
from qslr.deploy.export.int8_export import (
    TIED_PROBABILITY,
    agreeing_steps,
    calibration_clips,
    calibration_videos,
    compare_with_float,
)
from qslr.deploy.export.onnx_export import onnx_session, read_metadata
from qslr.deploy.serving.client import CslrClient
from qslr.model.checkpoints import input_spec_for
from qslr.model.network import build_model
from qslr.pipelines.prepared import PreparedDataset
from qslr.tools.cli import cli
from qslr.train.checkpointing import model_sections, save_training_checkpoint
from qslr.train.config import load_config

# Measured over held-out clips: this session's small model keeps every greedy label, its probabilities within
# 2e-5; the demo model keeps 99.7 % of them, within 0.075. A mis-scaled layer or a padding leak changes most labels.
MIN_AGREEMENT = 0.95
MAX_PROBABILITY_DIFFERENCE = 0.25


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {output: node for node in graph.node for output in node.output}


def test_the_convolutional_part_and_only_it_is_quantised_symmetrically(int8_graph, tiny_corpus):
    model = onnx.load(str(int8_graph))
    graph = model.graph
    weights = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    made_by = _producers(graph)
    convolutions = [n for n in graph.node if n.op_type == "Conv"]
    assert len(convolutions) >= 3  # the frame encoder's and the temporal CNN's
    for conv in convolutions:
        data, weight = made_by[conv.input[0]], made_by[conv.input[1]]
        assert data.op_type == weight.op_type == "DequantizeLinear", conv.name
        assert weights[weight.input[0]].dtype == np.int8  # the weights are stored quantised
        scale = weights[weight.input[1]]
        out_channels = weights[weight.input[0]].shape[0]
        assert scale.shape == (out_channels,)  # one scale per output channel, on axis 0
        assert [a.i for a in weight.attribute if a.name == "axis"] in ([], [0])
        assert weights[data.input[1]].shape == ()  # one scale per activation tensor
        if len(conv.input) > 2:  # the bias stays float: TensorRT dequantises no INT32
            assert conv.input[2] in weights and weights[conv.input[2]].dtype == np.float32
        # The output is quantised after the ReLU that follows (where the next quantised operator reads it), as
        # TensorRT's placement has it, not at the convolution itself.
        assert "QuantizeLinear" not in [n.op_type for n in graph.node if conv.output[0] in n.input], conv.name
    pools = [n for n in graph.node if n.op_type in ("MaxPool", "AveragePool", "GlobalAveragePool")]
    assert pools  # the frame encoder's average pooling and the temporal CNN's max-pooling
    for pool in pools:  # pools integers: read through a pair and quantised again at the same scale
        source, readers = made_by[pool.input[0]], [n for n in graph.node if pool.output[0] in n.input]
        assert source.op_type == "DequantizeLinear" and [n.op_type for n in readers] == ["QuantizeLinear"], pool.name
        assert weights[source.input[1]] == weights[readers[0].input[1]], pool.name
    for node in graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zero = weights[node.input[2]]
            assert zero.dtype == np.int8 and not zero.any(), node.name
        if node.op_type in ("LSTM", "Gemm", "MatMul"):  # the BiLSTM, the classifiers, the small CNN's Linear
            # Float weights; only the frame encoder's Linear reads a quantised activation (its last ReLU's).
            dequantised = [i for i in node.input if i in made_by and made_by[i].op_type == "DequantizeLinear"]
            assert dequantised == [] or (node.name.startswith("/frame_encoder/") and dequantised == node.input[:1])
    (cast,) = [n for n in graph.node if names.FRAMES in n.input]
    assert cast.op_type == "Cast"  # uint8 frames become float before anything is quantised
    metadata = read_metadata(int8_graph)
    assert metadata["qslr_precision"] == "int8" and metadata["qslr_int8_calibration"] == "minmax"
    train = PreparedDataset(tiny_corpus[0]).records("train")[:CALIBRATION_CLIPS]
    assert json.loads(metadata["qslr_int8_calibration_clips"]) == [Path(r.video).name for r in train]
    assert tensorrt_problems(int8_graph) == []
    checked = CliRunner().invoke(cli, ["export", "check", str(int8_graph)])
    assert checked.exit_code == 0, checked.output


def _rewritten(int8_graph: Path, tmp_path: Path, change) -> Path:
    model = onnx.load(str(int8_graph))
    change(model.graph, {t.name: t for t in model.graph.initializer})
    out = tmp_path / "changed.onnx"
    onnx.save(model, str(out))
    return out


def _first(graph, op_type: str, on_weight: bool):
    weights = {t.name for t in graph.initializer}
    return next(n for n in graph.node if n.op_type == op_type and (n.input[0] in weights) == on_weight)


def _set(initializers, name: str, array: np.ndarray) -> None:
    initializers[name].CopyFrom(numpy_helper.from_array(array, name))


@pytest.mark.parametrize(("change", "message"), [
    (lambda g, i: _set(i, _first(g, "QuantizeLinear", False).input[2], np.int8(3)), "is not 0"),
    (lambda g, i: _set(i, _first(g, "QuantizeLinear", False).input[2], np.uint8(0)), "is UINT8; TensorRT quantises"),
    (lambda g, i: _first(g, "QuantizeLinear", False).input.pop(), "no zero point, so it quantises to UINT8"),
    (lambda g, i: _set(i, _first(g, "QuantizeLinear", False).input[1], np.float32(-0.1)), "is not positive"),
    (lambda g, i: _set(i, _first(g, "QuantizeLinear", False).input[1], np.full(4, 0.1, np.float32)),
     "4 scales on activation"),
])
def test_tensorrt_quantisation_rules_name_the_node(int8_graph, tmp_path, change, message):
    problems = tensorrt_problems(_rewritten(int8_graph, tmp_path, change))
    assert any(message in p and "(QuantizeLinear)" in p for p in problems), problems


def test_an_int32_bias_dequantisation_is_refused(int8_graph, tmp_path):
    def int32_weight(graph, initializers):
        node = _first(graph, "DequantizeLinear", True)
        _set(initializers, node.input[0], numpy_helper.to_array(initializers[node.input[0]]).astype(np.int32))
        _set(initializers, node.input[2], numpy_helper.to_array(initializers[node.input[2]]).astype(np.int32))

    problems = tensorrt_problems(_rewritten(int8_graph, tmp_path, int32_weight))
    assert any("(DequantizeLinear) input" in p and "is INT32" in p for p in problems), problems


@pytest.fixture(scope="module")
def held_out(tiny_corpus):
    dataset = PreparedDataset(tiny_corpus[0])
    videos = [dataset.video_path(r) for split in ("test", "dev") for r in dataset.records(split)]
    return calibration_clips(videos, 72, 72)


def test_outputs_stay_close_to_float32_on_held_out_clips(checkpoint, int8_graph, held_out):
    comparison = compare_with_float(checkpoint, int8_graph, held_out)  # also checks every clip's output length
    assert comparison.steps > 0
    assert comparison.agreement >= MIN_AGREEMENT, comparison
    assert comparison.max_probability_difference <= MAX_PROBABILITY_DIFFERENCE, comparison


def test_a_label_tied_in_float32_agrees_and_any_other_change_of_label_does_not():
    float_probabilities = np.array([[0.5, 0.4995, 0.0005], [0.6, 0.3, 0.1], [0.3334, 0.3333, 0.3333],
                                    [0.9, 0.05, 0.05]])
    int8_probabilities = np.array([[0.49, 0.51, 0.0], [0.3, 0.6, 0.1], [0.33, 0.34, 0.33], [0.9, 0.05, 0.05]])
    # A near-uniform step (an untrained model's) flips on any rounding: a tie; 0.6 against 0.3 is no tie.
    assert agreeing_steps(np.log(int8_probabilities), np.log(float_probabilities)) == 3
    assert TIED_PROBABILITY < 0.01
    flipped = int8_probabilities.copy()
    flipped[3] = [0.05, 0.9, 0.05]
    assert agreeing_steps(np.log(flipped), np.log(float_probabilities)) == 2


def test_a_clip_in_a_padded_batch_equals_the_clip_alone(int8_graph, held_out):
    session = onnx_session(int8_graph)
    clips = sorted(held_out, key=lambda c: len(c.frames))[:3]
    longest = max(len(c.frames) for c in clips)
    batch = np.zeros((len(clips), longest, 72, 72, 3), np.uint8)
    for row, clip in enumerate(clips):
        batch[row, : len(clip.frames)] = clip.frames
    lengths = np.array([len(c.frames) for c in clips], dtype=np.int64)
    together, steps = session.run(list(names.OUTPUTS), {names.FRAMES: batch, names.LENGTHS: lengths})[:2]
    for row, clip in enumerate(clips):
        alone, alone_steps = session.run(list(names.OUTPUTS), {names.FRAMES: clip.frames[None],
                                                                names.LENGTHS: lengths[row:row + 1]})[:2]
        assert steps[row] == alone_steps[0]
        np.testing.assert_allclose(together[row, : steps[row]], alone[0], atol=1e-5)


def test_calibration_takes_a_folder_of_videos_and_refuses_an_empty_one(tiny_corpus, tmp_path):
    dataset = PreparedDataset(tiny_corpus[0])
    folder = tmp_path / "videos"
    folder.mkdir()
    for record in dataset.records("dev")[:2]:
        (folder / Path(record.video).name).write_bytes(dataset.video_path(record).read_bytes())
    assert [p.name for p in calibration_videos(folder, 5)] == sorted(p.name for p in folder.iterdir())
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="holds no videos to calibrate with"):
        calibration_videos(empty, 5)


def test_precision_flags_that_contradict_are_refused_in_one_line(checkpoint, int8_graph, tmp_path):
    both = CliRunner().invoke(cli, ["export", "onnx", "--checkpoint", str(checkpoint), "--out",
                                    str(tmp_path / "x.onnx"), "--int8", "--fp16"])
    assert both.exit_code == 2 and "--fp16 and --int8 exclude each other" in both.output
    engine = CliRunner().invoke(cli, ["export", "tensorrt", "--onnx", str(int8_graph), "--out",
                                      str(tmp_path / "x.plan"), "--fp16"])
    assert engine.exit_code == 1 and "the graph's precision is int8, " in engine.output


@pytest.mark.slow
def test_the_int8_repository_answers_as_recognise_onnx_does(int8_graph, variant_repository, variant_server, videos):
    assert (variant_repository / "visual" / "1" / "model.onnx").read_bytes() == int8_graph.read_bytes()
    assert "(int8)" in (variant_repository / "README.md").read_text()
    local = CliRunner().invoke(cli, ["recognise", "--onnx", str(int8_graph), "--json", *map(str, videos[:4])])
    assert local.exit_code == 0, local.output
    expected = [json.loads(line)["glosses"] for line in local.output.splitlines() if line.startswith("{")]
    with contextlib.closing(CslrClient(variant_server.http_url)) as client:
        for video, want in zip(videos[:4], expected, strict=True):
            served = client.recognise_file(video)
            assert served.glosses == [g["gloss"] for g in want]
            assert served.start_s == pytest.approx([g["start"] for g in want], abs=1e-3)


@pytest.fixture(scope="module")
def resnet_int8_graph(tiny_corpus, tmp_path_factory) -> Path:
    """The phoenix2014-vac preset's ResNet-18 (random weights, 8 channels after the stem instead of 64: every block
    and residual addition of the architecture, at a fraction of the cost) at 72x72, through `qslr export onnx
    --int8`: the session model's small CNN has no residual addition."""
    config = load_config("phoenix2014-vac", ["model.frame_encoder.weights=null", "model.frame_encoder.options.width=8",
                                             "data.crop_size=64", "model.temporal.hidden_size=24",
                                             "model.sequence.hidden_size=24"])
    vocab = {f"G{i}": i + 1 for i in range(9)}
    torch.manual_seed(0)
    model = build_model(len(vocab) + 1, **model_sections(config)).eval()
    folder = tmp_path_factory.mktemp("resnet-int8")
    checkpoint = folder / "resnet18.pt"
    save_training_checkpoint(checkpoint, model, config, vocab, input_spec_for(config.model.temporal.kernels, 64, 72,
                                                                              72, 25.0), {})
    out = folder / "model.int8.onnx"
    result = CliRunner().invoke(cli, ["export", "onnx", "--checkpoint", str(checkpoint), "--out", str(out), "--int8",
                                      "--calibration-data", str(tiny_corpus[0]), "--calibration-clips", "2",
                                      "--no-check"])
    assert result.exit_code == 0, result.output
    # onnxruntime, given the graph as every session lowers it, still runs every convolution and ReLU in INT8.
    assert "onnxruntime runs 22 of 22 convolutions in INT8 (QLinearConv); 0 ReLUs stay float32" in result.output
    assert "warning" not in result.output
    return out


def test_every_residual_addition_of_a_resnet_export_is_placed_as_tensorrt_fuses_it(resnet_int8_graph):
    """In the file, each of ResNet-18's 8 residual additions reads its convolution branch straight from the
    convolution and its skip operand from a DequantizeLinear (in the 3 downsampling blocks the 1x1 shortcut's output
    is the quantised one): TensorRT then fuses Conv + Add + ReLU into one INT8 kernel."""
    graph = onnx.load(str(resnet_int8_graph)).graph
    made_by = _producers(graph)
    additions = [n for n in graph.node if n.op_type == "Add" and n.name.startswith("/frame_encoder/")]
    assert len(additions) == 8
    for add in additions:
        branch, skip = (made_by[name] for name in add.input)
        assert branch.op_type == "Conv" and branch.name.endswith("/conv2/Conv"), add.name
        assert skip.op_type == "DequantizeLinear", add.name
    quantised_convolutions = [n for n in graph.node if n.op_type == "QuantizeLinear"
                              and made_by.get(n.input[0]) is not None and made_by[n.input[0]].op_type == "Conv"]
    assert len(quantised_convolutions) == 3
    assert all("/downsample/" in made_by[n.input[0]].name for n in quantised_convolutions)
    assert tensorrt_problems(resnet_int8_graph) == []


def test_a_graph_for_another_frame_size_is_refused_by_the_repository(checkpoint, int8_graph, tmp_path):
    built = CliRunner().invoke(cli, ["triton", "build", "--checkpoint", str(checkpoint), "--out",
                                     str(tmp_path / "repo"), "--onnx", str(int8_graph), "--height", "80", "--width",
                                     "80"])
    assert built.exit_code == 1 and "takes 72x72 frames, the repository 80x80" in built.output
    assert not (tmp_path / "repo").exists()
