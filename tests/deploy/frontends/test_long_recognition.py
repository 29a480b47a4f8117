"""Long videos in `qslr recognise`: a joined video runs in windows whose kept log-probabilities are those of each
window run alone (frames streamed, windows batched); spans are in the whole video's seconds; a video over the
maximum duration, cut short or corrupt midway gets one line naming the problem and how much was readable, and
the other videos of the command are still recognised."""

from __future__ import annotations

import json
import random
import re

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from qslr.deploy.frontends.recognise import LocalRecogniser, load_checkpoint_model, load_onnx_model
from qslr.deploy.served import served_from_checkpoint
from qslr.deploy.served_limits import ClipTooLongError, ServedLimits, pad_to_minimum
from qslr.deploy.serving.buffered import WindowPlan, stitch
from qslr.pipelines.long_videos import JoinedVideo, choose_clips, join_clips
from qslr.pipelines.prepared import PreparedDataset
from qslr.pipelines.video_io import read_video, resize_frames
from qslr.tools.cli import cli

PLAN = WindowPlan(64, 16, 4)


@pytest.fixture(scope="module")
def joined(tiny_corpus, tmp_path_factory) -> JoinedVideo:
    dataset = PreparedDataset(tiny_corpus[0])
    out = tmp_path_factory.mktemp("long") / "joined.webm"
    join_clips(dataset, choose_clips(dataset, "train", 4), out)
    return JoinedVideo.read(out), out


def test_a_long_video_s_output_is_its_windows_run_alone_and_stitched(checkpoint, joined):
    reference, path = joined
    model = load_checkpoint_model(checkpoint)
    output, framing = LocalRecogniser(model, windows=PLAN, window_batch=3).outputs(path)
    assert framing.fps == 25.0 and framing.unchanged and output.frames == reference.frames > 2 * PLAN.window
    windows = PLAN.windows(reference.frames)
    assert output.windows == len(windows)

    served, _ = served_from_checkpoint(checkpoint)
    frames = resize_frames(read_video(path)[0], model.height, model.width)
    alone, steps = [], []
    for window in windows:
        clip = torch.from_numpy(frames[window.start:window.stop][None])
        with torch.inference_mode():
            log_probs, valid = served(clip, torch.tensor([len(clip[0])]))
        alone.append(log_probs[0].numpy())
        steps.append(int(valid[0]))
    expected = stitch(windows, alone, steps)
    assert output.steps == len(expected) == -(-reference.frames // 4)
    # Batched with other windows, a window gives its output alone up to float rounding (batch independence).
    np.testing.assert_allclose(output.log_probs, expected, atol=1e-4)


def test_a_video_of_one_window_gets_a_clip_s_log_probabilities_bit_for_bit(checkpoint, videos):
    """Streamed in chunks or not, a video no longer than a window is the clip the served signature takes whole."""
    model = load_checkpoint_model(checkpoint)
    recogniser = LocalRecogniser(model)
    for video in videos[:3]:
        output, _ = recogniser.outputs(video)
        frames = resize_frames(read_video(video)[0], model.height, model.width)
        log_probs, steps = model.run(pad_to_minimum(frames, ServedLimits().min_frames)[None],
                                     np.array([len(frames)], dtype=np.int64))
        assert output.windows == 1 and output.steps == int(steps[0])
        assert np.array_equal(output.log_probs, log_probs[0])


def test_the_exported_graph_recognises_a_long_video_as_the_checkpoint_does(checkpoint, repository, joined):
    _, path = joined
    local = LocalRecogniser(load_checkpoint_model(checkpoint), windows=PLAN)
    onnx = LocalRecogniser(load_onnx_model(repository / "visual" / "1" / "model.onnx"), windows=PLAN)
    assert onnx.outputs(path)[0].windows == local.outputs(path)[0].windows > 1
    np.testing.assert_allclose(onnx.outputs(path)[0].log_probs, local.outputs(path)[0].log_probs, atol=1e-3)
    options = local.options(10, 3)
    assert onnx.recognise(path, options).glosses == local.recognise(path, options).glosses


def test_spans_are_in_the_whole_video_s_seconds(checkpoint, joined):
    reference, path = joined
    result = CliRunner().invoke(cli, ["recognise", str(path), "--checkpoint", str(checkpoint), "--json",
                                      "--window", "64", "--context", "16", "--beam", "0",
                                      "--ref", str(JoinedVideo.reference_path(path))])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["reference"]["glosses"] == reference.glosses.split()
    duration = reference.frames / reference.fps
    starts = [g["start"] for g in record["glosses"]]
    assert starts == sorted(starts)
    assert all(0 <= g["start"] < g["end"] <= duration + 1e-6 for g in record["glosses"])
    # A gloss at output step s starts at frame 4 s of the whole video, not of its window.
    assert all(g["start"] == pytest.approx(4 * g["step"] / reference.fps, abs=1e-3) for g in record["glosses"])


def test_a_plan_the_served_limits_cannot_take_is_refused(checkpoint):
    model = load_checkpoint_model(checkpoint)
    with pytest.raises(ValueError, match="more than the served maximum of 400"):
        LocalRecogniser(model, windows=WindowPlan(800, 64, 4))
    result = CliRunner().invoke(cli, ["recognise", "x.webm", "--checkpoint", str(checkpoint), "--window", "66"])
    assert result.exit_code == 2 and "multiples of the model's 4" in result.output


def test_a_video_over_the_maximum_duration_is_refused_naming_both(checkpoint, joined, videos):
    reference, path = joined
    result = CliRunner().invoke(cli, ["recognise", str(path), str(videos[0]), "--checkpoint", str(checkpoint),
                                      "--max-duration", "5"])
    assert result.exit_code == 1
    assert re.search(rf"{re.escape(str(path))}: video too long: it lasts 0:\d\d\.\d \({reference.frames} frames at "
                     rf"25 fps\), the served maximum is 0:05\.0", result.output), result.output
    assert f"{videos[0]}: " in result.output  # the other video was recognised
    assert "1 of 2 videos could not be recognised" in result.output
    with pytest.raises(ClipTooLongError, match=r"it lasts 10:01\.0 \(15025 frames at 25 fps\), the served "
                                               r"maximum is 10:00\.0"):
        ServedLimits().check_duration(15025, 25.0)
    with pytest.raises(ClipTooLongError, match=r"it lasts 0:01\.2 \(30 frames at 25 fps, assumed\)"):
        ServedLimits(max_seconds=1).check_duration(30, 0.0)


@pytest.mark.parametrize("damage", ["cut short", "corrupt midway"])
def test_a_damaged_long_video_gets_one_line_saying_how_much_was_readable(checkpoint, joined, tmp_path, damage):
    _, path = joined
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    if damage == "cut short":
        data = data[:middle]
    else:  # seconds of it overwritten: the demuxer skips to the next readable cluster, or the decoder fails
        data[len(data) // 3:len(data) // 3 + len(data) // 4] = random.Random(0).randbytes(len(data) // 4)
    broken = tmp_path / "broken.webm"
    broken.write_bytes(bytes(data))
    result = CliRunner().invoke(cli, ["recognise", str(broken), "--checkpoint", str(checkpoint),
                                      "--window", "64", "--context", "16"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert lines[0].startswith(f"{broken}: the video is ") and "could be read" in lines[0]
    assert ("corrupt midway" if damage == "corrupt midway" else "truncated or incomplete") in lines[0]
    assert lines[1:] == ["1 of 1 videos could not be recognised"]
