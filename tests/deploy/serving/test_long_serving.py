"""Long videos on the real server: `cslr` answers a video longer than the served frames in windows, as local
recognition with the repository's window plan does; clips keep the ensemble's path; in one batch a long video,
a clip and a long video corrupt midway each get their own answer, and the server keeps serving."""

from __future__ import annotations

import json
import random
import re
from concurrent.futures import ThreadPoolExecutor

import pytest
from click.testing import CliRunner
from served_settings import MAX_FRAMES, MAX_SECONDS

from qslr.deploy.frontends.recognise import LocalRecogniser, load_checkpoint_model
from qslr.deploy.served_limits import ServedLimits
from qslr.deploy.serving.buffered import WindowPlan
from qslr.deploy.serving.client import CslrClient
from qslr.deploy.serving.repository_checks import read_config
from qslr.pipelines.long_videos import JoinedVideo, choose_clips, join_clips
from qslr.pipelines.prepared import PreparedDataset
from qslr.tools.cli import cli


@pytest.fixture(scope="module")
def long_video(tiny_corpus, tmp_path_factory):
    dataset = PreparedDataset(tiny_corpus[0])
    out = tmp_path_factory.mktemp("long-served") / "joined.webm"
    join_clips(dataset, choose_clips(dataset, "train", len(dataset.records("train"))), out)
    return JoinedVideo.read(out), out


def _served_plan(repository) -> WindowPlan:
    parameters = {k: v.string_value for k, v in read_config(repository / "cslr" / "config.pbtxt").parameters.items()}
    return WindowPlan(int(parameters["window_frames"]), int(parameters["context_frames"]),
                      int(parameters["frames_per_step"]))


def test_a_long_video_is_answered_in_windows_as_local_recognition_answers_it(server, repository, checkpoint,
                                                                             long_video):
    reference, path = long_video
    plan = _served_plan(repository)
    # The checkpoint's 400-frame window is cut to the repository's 180 served frames.
    assert plan.window == MAX_FRAMES - MAX_FRAMES % 4 and reference.frames > plan.window
    local = LocalRecogniser(load_checkpoint_model(checkpoint), ServedLimits(max_frames=MAX_FRAMES,
                                                                            max_seconds=MAX_SECONDS), plan)
    output, _ = local.outputs(path)
    assert output.windows > 1
    client = CslrClient(server.http_url)
    for beam_size, top_k in ((0, None), (10, 3)):
        served = client.recognise_file(path, beam_size, top_k)
        expected = local.recognise(path, local.options(beam_size, top_k))
        assert (served.glosses, served.steps) == (expected.glosses, expected.steps)
        assert served.start_s == pytest.approx(expected.start_s, abs=1e-4)
        assert [a.glosses for a in served.alternatives] == [a.glosses for a in expected.alternatives]
        assert all(0 <= s < e <= reference.frames / reference.fps + 1e-3
                   for s, e in zip(served.start_s, served.end_s, strict=True))


def test_a_batch_mixing_long_short_and_corrupt_videos_answers_each(server, long_video, videos, tmp_path):
    _, path = long_video
    data = bytearray(path.read_bytes())
    start, length = len(data) // 3, len(data) // 4  # seconds of the video overwritten: the demuxer skips them
    data[start:start + length] = random.Random(0).randbytes(length)
    corrupt = tmp_path / "corrupt.webm"
    corrupt.write_bytes(bytes(data))
    client = CslrClient(server.http_url)
    alone = {str(path): client.recognise_file(path), str(videos[0]): client.recognise_file(videos[0])}

    def ask(video):
        try:  # a client each: tritonclient's HTTP client is not for several threads at once
            return CslrClient(server.http_url).recognise_file(video)
        except Exception as exc:  # noqa: BLE001 - the answer under test is the error itself
            return exc

    order = [path, videos[0], corrupt, path, videos[0], corrupt]
    with ThreadPoolExecutor(len(order)) as pool:
        answers = list(pool.map(ask, order))
    for video, answer in zip(order, answers, strict=True):
        if video == corrupt:
            assert isinstance(answer, Exception)
            # Refused when its container is read (as a clip's upload is, by preprocess) or while it is decoded.
            assert re.search(r"(preprocess|cslr): video bytes: the video is (corrupt midway|truncated or "
                             r"incomplete): .* could be read", str(answer)), str(answer)
        else:
            assert answer.glosses == alone[str(video)].glosses
    assert client.recognise_file(videos[0]).glosses == alone[str(videos[0])].glosses


def test_the_repository_states_its_windows_and_duration(repository):
    settings = json.loads((repository / "qslr-repository.json").read_text())["settings"]
    assert (settings["window_frames"], settings["max_seconds"]) == (MAX_FRAMES - MAX_FRAMES % 4, MAX_SECONDS)
    assert "windows of 180 frames" in (repository / "README.md").read_text()


def test_triton_build_takes_the_window_settings_and_refuses_a_window_over_the_served_frames(checkpoint, tmp_path):
    out = tmp_path / "repo"
    result = CliRunner().invoke(cli, ["triton", "build", "--checkpoint", str(checkpoint), "--out", str(out),
                                      "--window", "96", "--context", "16", "--window-batch", "2",
                                      "--max-duration", "120", "--cslr-instances", "3"])
    assert result.exit_code == 0, result.output
    config = read_config(out / "cslr" / "config.pbtxt")
    parameters = {k: v.string_value for k, v in config.parameters.items()}
    assert (parameters["window_frames"], parameters["context_frames"], parameters["window_batch"],
            parameters["max_seconds"]) == ("96", "16", "2", "120.0")
    assert config.instance_group[0].count == 3
    refused = CliRunner().invoke(cli, ["triton", "build", "--checkpoint", str(checkpoint), "--out",
                                       str(tmp_path / "r2"), "--window", "800"])
    assert refused.exit_code == 1
    assert refused.output.strip().splitlines()[-1] == \
        "Error: a window of 800 frames is more than the served maximum of 400 frames a clip"
    assert not (tmp_path / "r2").exists()
