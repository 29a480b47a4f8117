"""Live windows through a real tritonserver's `visual` model (one window a request, from any thread), with the
settings read from the server: a stream answers as the same checkpoint run locally answers it."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from qslr.deploy import model_names as models
from qslr.deploy.frontends.live import LiveModel
from qslr.deploy.frontends.recognise import load_checkpoint_model
from qslr.deploy.serving.buffered import WindowPlan
from qslr.deploy.serving.client import RecognitionError
from qslr.deploy.serving.visual_client import ServedVisual, served_parameters
from qslr.pipelines.video_io import read_video

PLAN = WindowPlan(32, 8, 4)


@pytest.fixture(scope="module")
def local(checkpoint):
    return load_checkpoint_model(checkpoint)


@pytest.mark.parametrize("grpc", [False, True])
def test_a_live_stream_through_the_server_answers_as_locally(server, repository, local, videos, grpc):
    url = server.grpc_url if grpc else server.http_url
    served = LiveModel.served(url, grpc, repository, PLAN.window, PLAN.context)
    assert (served.plan, served.target, served.min_frames) == (PLAN, local.target, 16)
    assert served.decoder.settings == local.decoder and served.decoder.vocab == local.vocab
    frames = np.concatenate([read_video(video)[0] for video in videos[:3]])
    times = np.arange(len(frames)) / 25
    answers = []
    for model in (served, LiveModel.local(local, PLAN)):
        stream = model.stream(model.decoder.options({}))
        updates = [u for start in range(0, len(frames), 7)
                   for u in stream.feed(frames[start:start + 7], times[start:start + 7])]
        answers.append((stream.finish(), len(updates)))
    (through_server, updates), (alone, local_updates) = answers
    assert updates == local_updates >= 3
    # onnxruntime on the server, PyTorch here: the same glosses, at the same steps.
    assert (through_server.glosses, through_server.steps) == (alone.glosses, alone.steps)
    assert through_server.score == pytest.approx(alone.score, abs=1e-3)


def test_windows_from_several_threads_each_get_their_own_output(server, local, videos):
    """A client per thread (tritonclient's HTTP client stays on its thread); each thread's windows come back as
    the local model gives them."""
    visual = ServedVisual(server.http_url)
    frames = read_video(videos[0])[0]
    clips = [frames[start:start + 32] for start in (0, 8, 16, 24)]
    results: dict[int, tuple] = {}

    def run(index: int) -> None:
        batch = np.zeros((1, 32, *frames.shape[1:]), np.uint8)
        batch[0, :len(clips[index])] = clips[index]
        results[index] = visual(batch, np.array([len(clips[index])]))

    threads = [threading.Thread(target=run, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for index, clip in enumerate(clips):
        expected, steps = local.run(clip[None], np.array([len(clip)]))
        log_probs, served_steps = results[index]
        assert served_steps.tolist() == steps.tolist()
        np.testing.assert_allclose(log_probs[0, :steps[0]], expected[0, :steps[0]], atol=1e-3)


def test_what_the_server_cannot_say_is_one_error(server, tmp_path):
    assert served_parameters(server.http_url, False, models.CSLR)["window_frames"].isdigit()
    with pytest.raises(RecognitionError, match="nosuch"):
        served_parameters(server.http_url, False, "nosuch")
    with pytest.raises(ValueError, match="vocab.json: cannot read the served vocabulary"):
        LiveModel.served(server.http_url, False, tmp_path)
