"""Live streams in `qslr recognise --live`: from a real pipe it answers what `qslr recognise` answers for the same
file with the same windows; frames captured at uneven times are placed as a file's timestamps place them; a frame of
another size is refused alone; a camera that outruns the recogniser loses frames (counted) while a pipe is slowed,
and the frames held stay bounded either way."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from qslr.deploy.frontends.live import LiveModel
from qslr.deploy.frontends.live_source import LiveSource
from qslr.deploy.frontends.recognise import LocalRecogniser, load_checkpoint_model
from qslr.deploy.serving.buffered import WindowPlan
from qslr.pipelines.framing import FramingError
from qslr.pipelines.long_videos import choose_clips, join_clips
from qslr.pipelines.prepared import PreparedDataset
from qslr.pipelines.video_io import VideoReader, encode_video, read_video
from qslr.tools.cli import cli

WINDOW = ["--window", "32", "--context", "8"]


@pytest.fixture(scope="module")
def joined(tiny_corpus, tmp_path_factory):
    dataset = PreparedDataset(tiny_corpus[0])
    out = tmp_path_factory.mktemp("live") / "joined.webm"
    join_clips(dataset, choose_clips(dataset, "train", 3), out)
    return out


@pytest.fixture(scope="module")
def model(checkpoint):
    return load_checkpoint_model(checkpoint)


@pytest.mark.slow
def test_recognise_live_from_a_pipe_answers_as_recognise_answers_the_file(checkpoint, joined):
    offline = CliRunner().invoke(cli, ["recognise", "--checkpoint", str(checkpoint), *WINDOW, "--json", str(joined)])
    assert offline.exit_code == 0, offline.output
    command = [sys.executable, "-m", "qslr.tools.cli", "recognise", "--live", "-", "--checkpoint", str(checkpoint),
               *WINDOW, "--json"]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    data = joined.read_bytes()
    for start in range(0, len(data), 4096):  # as a camera's encoder would write it: a piece at a time
        process.stdin.write(data[start:start + 4096])
    process.stdin.close()
    output, errors = process.stdout.read(), process.stderr.read()
    assert process.wait(timeout=120) == 0, errors.decode()
    lines = [json.loads(line) for line in output.decode().splitlines()]
    updates, answer = lines[:-1], lines[-1]
    expected = json.loads(offline.output)
    assert answer == {**expected, "video": "<stdin>"}
    assert len(updates) >= 4 and all(u["dropped"] == 0 for u in updates)
    finals = [g for u in updates for g in u["final"]]
    assert [g["index"] for g in finals] == sorted({g["index"] for g in finals})  # each final gloss once
    assert [g["gloss"] for g in finals] == [g["gloss"] for g in expected["glosses"]][:len(finals)]


def test_text_output_prints_each_final_gloss_once_with_its_time(checkpoint, joined):
    result = CliRunner().invoke(cli, ["recognise", "--live", "-", "--checkpoint", str(checkpoint), *WINDOW],
                                input=joined.read_bytes())
    assert result.exit_code == 0, result.output
    offline = json.loads(CliRunner().invoke(cli, ["recognise", "--checkpoint", str(checkpoint), *WINDOW, "--json",
                                                  str(joined)]).output)
    lines = result.output.splitlines()
    glosses = [line.split()[-1] for line in lines if line.startswith("  ") and " s  " in line]
    assert glosses == [g["gloss"] for g in offline["glosses"]]
    assert lines[-2].startswith("<stdin>: " + " ".join(glosses)) and lines[-1].startswith("  framing:")


def test_frames_captured_at_uneven_times_are_placed_as_a_file_s_timestamps_place_them(model, joined, tmp_path):
    """A camera at about 30 fps with jitter: the stream's answer is `qslr recognise`'s for a file of the same
    frames with the same timestamps (each placed on the model's 25 fps by its time, then windows as usual)."""
    frames = read_video(joined)[0][:120]
    times = np.cumsum(np.random.default_rng(0).uniform(0.02, 0.047, len(frames)))
    times -= times[0]
    recorded = tmp_path / "camera.webm"
    encode_video(recorded, frames, 30, "libvpx-vp9", codec_options={"lossless": "1"}, timestamps=times.tolist())
    plan = WindowPlan(32, 8, 4)
    recogniser = LocalRecogniser(model, windows=plan)
    expected = recogniser.recognise(recorded, recogniser.options())
    stream = LiveModel.local(model, plan).stream(recogniser.options())
    with VideoReader(recorded) as reader:  # the times as the container keeps them (to the millisecond)
        for chunk, starts in reader.timed_chunks(5):
            assert np.allclose(starts, times[:len(starts)], atol=1e-3)
            times = times[len(starts):]
            stream.feed(chunk, starts, source_fps=reader.fps)
    answer = stream.finish(reader.end)
    assert answer.framing["frames_in"] == len(frames) and answer.framing["frames_out"] != len(frames)
    assert answer.framing["model_fps"] == 25.0
    assert (answer.glosses, answer.steps, answer.score, answer.start_s) == (expected.glosses, expected.steps,
                                                                            expected.score, expected.start_s)


def test_a_frame_of_another_size_is_refused_alone(model, joined):
    frames, _ = read_video(joined)
    stream = LiveModel.local(model, WindowPlan(32, 8, 4)).stream(LocalRecogniser(model).options())
    stream.feed(frames[:10], np.arange(10) / 25)
    with pytest.raises(FramingError, match="a frame of 36x72, the stream's are 72x72"):
        stream.feed(frames[10:11, :, :36], [10 / 25])
    stream.feed(frames[10:40], np.arange(10, 40) / 25)
    assert stream.finish().framing["frames_in"] == 40


class _Slow:
    def __init__(self, source: LiveSource):
        self.source, self.held = source, []

    def take(self) -> int:
        frames = 0
        for captured in self.source.frames():
            self.held.append(self.source._queue.qsize())
            frames += len(captured.frames)
            time.sleep(0.01)
        return frames


@pytest.mark.parametrize("camera", [True, False])
def test_a_camera_that_outruns_the_recogniser_loses_frames_and_a_pipe_is_slowed(joined, camera):
    """The reader decodes a frame in well under the 10 ms the recogniser here takes: a camera's frames beyond the
    queue's 4 are dropped and counted, a pipe's reader waits; the queue never holds more than 4 either way."""
    total = len(read_video(joined)[0])
    source = LiveSource(str(joined), capacity=4, camera=camera)
    recogniser = _Slow(source)
    taken = recogniser.take()
    assert taken + source.dropped == total and 1 <= max(recogniser.held) <= 4
    assert (source.dropped > total // 3) if camera else (source.dropped == 0 and taken == total)
    assert source.end == pytest.approx(total / 25)
