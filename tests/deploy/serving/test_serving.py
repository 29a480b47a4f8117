"""The Triton repository against a real tritonserver on 127.0.0.1: results, batching, bad requests."""

from __future__ import annotations

import contextlib
import json
import re
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from served_settings import MAX_FRAMES, MAX_SECONDS

from qslr.deploy import tensor_names as names
from qslr.deploy.model_names import MODELS
from qslr.deploy.served import served_from_checkpoint
from qslr.deploy.served_limits import ServedLimits
from qslr.deploy.serving import processes, server_binary
from qslr.deploy.serving.client import CslrClient
from qslr.deploy.serving.server import Ports, ServerError, TritonServer, free_port
from qslr.deploy.serving.triton_repository import SOURCES, RepositorySettings, build_repository
from qslr.model.decoding import Hypothesis
from qslr.pipelines.prepared import PreparedDataset
from qslr.pipelines.temporal_padding import stride
from qslr.pipelines.video_io import read_frames, read_video, write_vp9
from qslr.tools.cli import cli
from qslr.train.checkpointing import load_trained
from qslr.train.plots.video_posteriors import checkpoint_decoder


def local_recognition(checkpoint: Path, video: Path, beam_size: int = 10) -> tuple[list[str], list[int]]:
    served, _ = served_from_checkpoint(checkpoint)
    frames = torch.from_numpy(read_frames(video))[None]
    with torch.no_grad():
        log_probs, lengths = served(frames, torch.tensor([frames.shape[1]]))
    decoder = checkpoint_decoder(load_trained(checkpoint), beam_size)
    (hypothesis,) = decoder.decode(log_probs, lengths)
    return hypothesis.glosses, hypothesis.steps


@pytest.mark.slow
def test_served_results_equal_local_decoding_over_http_and_grpc(server, checkpoint, videos):
    http, grpc = CslrClient(server.http_url), CslrClient(server.grpc_url, grpc=True)
    for video in videos[:6]:
        expected = local_recognition(checkpoint, video)
        for client in (http, grpc):
            result = client.recognise_file(video)
            assert (result.glosses, result.steps) == expected, video
    greedy = http.recognise_file(videos[0], beam_size=0)
    assert (greedy.glosses, greedy.steps) == local_recognition(checkpoint, videos[0], beam_size=0)
    frames = read_frames(videos[1])
    assert http.recognise_frames(frames).glosses == local_recognition(checkpoint, videos[1])[0]


def test_a_clip_shorter_than_the_served_minimum_is_padded_without_changing_its_answer(server, checkpoint, videos,
                                                                                       tmp_path):
    minimum = ServedLimits().min_frames
    short = tmp_path / "short.webm"
    write_vp9(short, read_frames(videos[0])[: minimum // 3], 25)
    client = CslrClient(server.http_url)
    assert client.served_min_frames() == minimum
    expected = local_recognition(checkpoint, short)
    result = client.recognise_file(short)
    assert (result.glosses, result.steps) == expected
    assert len(result.steps) == 0 or max(result.steps) < -(-(minimum // 3) // 4)  # steps of the clip, not the padding
    assert client.recognise_frames(read_frames(short)).glosses == expected[0]


def test_the_server_answers_what_eval_run_scores(server, checkpoint, tiny_corpus):
    from qslr.model.checkpoints import load_checkpoint
    from qslr.train.config import ExperimentConfig, build
    from qslr.train.evaluation import decode_split

    loaded = load_checkpoint(checkpoint)
    config = build(ExperimentConfig, loaded.config)
    dataset = PreparedDataset(tiny_corpus[0])
    client = CslrClient(server.http_url)
    # The decoder places the glosses' steps in the video by the model's own stride.
    assert client.served_parameter("ctc_decoder", "frames_per_step", 0) == stride(config.model.temporal.kernels)
    compared = 0
    for split in ("test", "dev"):
        evaluated, _ = decode_split(loaded.model, config, split, torch.device("cpu"), loaded.vocab)
        for record in dataset.records(split):
            if record.num_frames <= MAX_FRAMES:
                assert client.recognise_file(dataset.video_path(record)).glosses == evaluated[record.id].glosses
                compared += 1
    assert compared >= 3


@pytest.mark.slow
def test_concurrent_requests_of_mixed_lengths_equal_one_at_a_time(server, videos):
    client = CslrClient(server.http_url)
    sequential = {v: client.recognise_file(v) for v in videos}
    jobs = [videos[i % len(videos)] for i in range(32)]
    with ThreadPoolExecutor(16) as pool:
        concurrent = list(pool.map(lambda v: CslrClient(server.http_url).recognise_file(v), jobs))
    for video, result in zip(jobs, concurrent, strict=True):
        assert result.glosses == sequential[video].glosses and result.steps == sequential[video].steps
        assert result.score == pytest.approx(sequential[video].score, abs=1e-3)


def _raw_infer(server, model: str, inputs: dict[str, np.ndarray], datatypes: dict[str, str]):
    import tritonclient.http as http

    client = http.InferenceServerClient(server.http_url)
    tensors = []
    for name, array in inputs.items():
        tensor = http.InferInput(name, list(array.shape), datatypes[name])
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return client.infer(model, tensors)


def served_log_probs(server, video: Path) -> tuple[np.ndarray, int, int, float]:
    """The served `preprocess` and `visual` models one after the other, as the ensemble runs them: (log-probs
    (T', V), valid steps, the video's frame count, its frame rate)."""
    data = np.frombuffer(video.read_bytes(), dtype=np.uint8)[None]
    clip = _raw_infer(server, "preprocess", {names.VIDEO: data}, {names.VIDEO: "UINT8"})
    frames, lengths = clip.as_numpy(names.FRAMES), clip.as_numpy(names.LENGTHS)
    visual = _raw_infer(server, "visual", {names.FRAMES: frames, names.LENGTHS: lengths},
                        {names.FRAMES: "UINT8", names.LENGTHS: "INT64"})
    return (visual.as_numpy(names.LOG_PROBS)[0], int(visual.as_numpy(names.OUTPUT_LENGTHS).reshape(-1)[0]),
            int(lengths.reshape(-1)[0]), float(clip.as_numpy(names.FPS).reshape(-1)[0]))


def expected_seconds(hypothesis: Hypothesis, frames: int, fps: float, frames_per_step: int = 4) -> list[float]:
    """Start and end of each gloss, flattened: step s covers frames [4s, 4s + 4), cut at the video's end."""
    return [value for start, end in zip(hypothesis.steps, hypothesis.ends, strict=True)
            for value in (start * frames_per_step / fps, min((end + 1) * frames_per_step, frames) / fps)]


@pytest.mark.slow
def test_served_decoding_equals_offline_decoding_of_the_served_log_probs(server, checkpoint, videos):
    trained = load_trained(checkpoint)
    client = CslrClient(server.http_url)
    compared_spans = 0
    for video in videos[:4]:
        log_probs, steps, frames, fps = served_log_probs(server, video)
        assert fps == pytest.approx(25.0)  # the tiny corpus's rate, as the container states it
        for beam_size in (0, 1, 4, 10):
            decoder = checkpoint_decoder(trained, beam_size)
            top_k = min(max(beam_size, 1), 3)
            (alternatives,) = decoder.decode_alternatives(log_probs[None], [steps], top_k)
            expected = alternatives[0]
            served = client.recognise_file(video, beam_size, top_k)
            assert (served.glosses, served.steps) == (expected.glosses, expected.steps), (video, beam_size)
            assert served.score == pytest.approx(expected.score, abs=1e-3)
            assert [v for span in served.spans for v in span[1:]] == pytest.approx(
                expected_seconds(expected, frames, fps), abs=1e-5)
            assert [a.glosses for a in served.alternatives] == [h.glosses for h in alternatives]
            assert [a.score for a in served.alternatives] == pytest.approx([h.score for h in alternatives], abs=1e-3)
            compared_spans += len(served.glosses)
    assert compared_spans > 0


@pytest.mark.slow
def test_top_k_gives_distinct_sequences_best_first_the_first_the_beam_answer(server, videos):
    client = CslrClient(server.http_url)
    several = 0
    for video in videos[:4]:
        beam = client.recognise_file(video, 10)
        result = client.recognise_file(video, 10, 5)
        texts = [" ".join(a.glosses) for a in result.alternatives]
        assert 1 <= len(texts) <= 5 and len(set(texts)) == len(texts)
        scores = [a.score for a in result.alternatives]
        assert scores == sorted(scores, reverse=True)
        assert result.alternatives[0].glosses == beam.glosses == result.glosses
        assert result.alternatives[0].score == pytest.approx(beam.score, abs=1e-3)
        several += len(texts) > 1
        over_grpc = CslrClient(server.grpc_url, grpc=True).recognise_file(video, 10, 5)
        assert [" ".join(a.glosses) for a in over_grpc.alternatives] == texts
        assert [a.glosses for a in client.recognise_file(video, 10).alternatives] == [beam.glosses]  # top_k 1
    assert several  # the one-epoch model is unsure enough for its beam to hold several labellings


@pytest.mark.slow
def test_spans_lie_in_order_inside_the_video(server, videos):
    client = CslrClient(server.http_url)
    checked = 0
    for video in videos:
        frames, fps = read_video(video)
        duration = len(frames) / fps
        for beam_size in (0, 10):
            result = client.recognise_file(video, beam_size)
            assert len(result.start_s) == len(result.end_s) == len(result.glosses)
            for start, end in zip(result.start_s, result.end_s, strict=True):
                assert 0 <= start < end <= duration + 1e-5
            for end, start in zip(result.end_s, result.start_s[1:], strict=False):
                assert end <= start + 1e-6
            checked += len(result.glosses)
    assert checked > 0


def test_raw_frames_take_their_rate_or_the_checkpoints(server, checkpoint, videos):
    assert load_trained(checkpoint).input.fps == 25.0
    client = CslrClient(server.http_url)
    frames, fps = read_video(videos[0])
    from_file = client.recognise_file(videos[0])
    unstated = client.recognise_frames(frames)  # the checkpoint's rate, which is this video's
    assert unstated.glosses == from_file.glosses
    assert unstated.start_s == pytest.approx(from_file.start_s) and unstated.end_s == pytest.approx(from_file.end_s)
    doubled = client.recognise_frames(frames, fps=2 * fps)
    assert doubled.start_s == pytest.approx([s / 2 for s in from_file.start_s])
    assert doubled.end_s == pytest.approx([e / 2 for e in from_file.end_s])


def _cut(video: Path, share: float) -> bytes:
    data = video.read_bytes()
    return data[: int(len(data) * share)]


@pytest.mark.slow
def test_bad_requests_get_errors_and_the_server_keeps_serving(server, videos, tmp_path):
    client = CslrClient(server.http_url)
    good = client.recognise_file(videos[0])
    too_long = tmp_path / "too-long.webm"
    frames = int(MAX_SECONDS * 25) + 25
    write_vp9(too_long, (np.full((72, 72, 3), i % 255, np.uint8) for i in range(frames)), 25)
    cases = [
        (lambda: client.recognise_bytes(b"definitely not a video" * 20), "cannot decode video"),
        (lambda: client.recognise_bytes(Path(videos[0]).read_bytes()[:300]), "preprocess"),
        (lambda: client.recognise_bytes(_cut(videos[0], 0.6)), "truncated or incomplete: .* could be read"),
        (lambda: client.recognise_file(too_long),
         rf"cslr: video too long: it lasts 0:{MAX_SECONDS + 1:04.1f} \({frames} frames at 25 fps\), the served "
         rf"maximum is 0:{MAX_SECONDS:04.1f}"),
        # Raw frames are a clip: cslr_frames takes at most the served frames, as the visual model does.
        (lambda: client.recognise_frames(np.zeros((MAX_FRAMES + 20, 72, 72, 3), np.uint8)),
         f"video too long: {MAX_FRAMES + 20} frames, the served maximum is {MAX_FRAMES}"),
        (lambda: client.recognise_frames(np.zeros((10, 50, 72, 3), np.uint8)), "shape"),
        (lambda: client.recognise_file(videos[0], beam_size=99), "beam_size must be an integer in 0..10"),
        (lambda: client.recognise_file(videos[0], beam_size=10, top_k=11), "top_k must be an integer in 1..10"),
        (lambda: client.recognise_file(videos[0], beam_size=0, top_k=2), "top_k 2 needs a beam .*greedy"),
        (lambda: _raw_infer(server, "cslr", {names.VIDEO: np.zeros((1, 8), np.float32)}, {names.VIDEO: "FP32"}),
         "FP32"),
        (lambda: _raw_infer(server, "cslr", {names.VIDEO: np.zeros((1, 0), np.uint8)}, {names.VIDEO: "UINT8"}),
         "empty"),
    ]
    for call, message in cases:
        with pytest.raises(Exception) as error:  # noqa: B017 - RecognitionError or tritonclient's own
            call()
        assert re.search(message, str(error.value)), (message, str(error.value))
        again = client.recognise_file(videos[0])
        assert again.glosses == good.glosses


def _batched_share(server, model: str) -> tuple[int, int]:
    import tritonclient.http as http

    stats = http.InferenceServerClient(server.http_url).get_inference_statistics(model)["model_stats"][0]
    return int(stats["inference_count"]), int(stats["execution_count"])


def test_bad_requests_batched_with_good_ones_fail_alone(server, videos, tmp_path):
    client = CslrClient(server.http_url)
    expected = {video: client.recognise_file(video).glosses for video in videos[:4]}
    too_long = tmp_path / "too-long.webm"
    write_vp9(too_long, (np.full((72, 72, 3), i % 255, np.uint8) for i in range(int(MAX_SECONDS * 25) + 5)), 25)
    bad = [(lambda: too_long.read_bytes(), {}, "video too long: it lasts"),
           (lambda: b"\x1a\x45\xdf\xa3" + bytes(range(256)) * 4, {}, "cannot decode video"),
           (lambda: _cut(videos[0], 0.6), {}, "truncated or incomplete"),
           (lambda: videos[1].read_bytes(), {"beam_size": -1}, "beam_size must be an integer"),
           (lambda: videos[1].read_bytes(), {"beam_size": 2.5}, "beam_size must be an integer"),
           (lambda: videos[1].read_bytes(), {"top_k": 0}, "top_k must be an integer in 1..10"),
           (lambda: videos[1].read_bytes(), {"top_k": True}, "top_k must be an integer"),
           (lambda: videos[1].read_bytes(), {"top_k": "3"}, "top_k must be an integer"),
           (lambda: videos[1].read_bytes(), {"beam_size": 0, "top_k": 3}, "top_k 3 needs a beam")]
    jobs = [("good", video, {}, None) for video in expected] * 3 + [("bad", data, options, message)
                                                                    for data, options, message in bad] * 2
    jobs += [("good", video, {"top_k": 3}, None) for video in expected]
    before = {model: _batched_share(server, model) for model in ("preprocess", "ctc_decoder")}

    def run(job):
        kind, source, options, message = job
        one = CslrClient(server.http_url)
        try:
            if kind == "good":
                result = one.recognise_file(source, **options)
                return result.glosses == expected[source] and len(result.alternatives) <= options.get("top_k", 1)
            one.recognise_bytes(source(), **options)
            return "answered"
        except Exception as exc:  # noqa: BLE001 - RecognitionError or tritonclient's own
            return (kind == "bad" and re.search(message, str(exc)) is not None) or str(exc)

    with ThreadPoolExecutor(len(jobs)) as pool:
        outcomes = list(pool.map(run, jobs))
    assert all(outcome is True for outcome in outcomes), [
        (job[0], job[3], outcome) for job, outcome in zip(jobs, outcomes, strict=True) if outcome is not True]
    # The requests really were batched together: fewer executions than requests in some model.
    after = {model: _batched_share(server, model) for model in before}
    assert any((after[m][0] - before[m][0]) > (after[m][1] - before[m][1]) for m in before), (before, after)


@pytest.mark.timeout(180)
@pytest.mark.slow
def test_a_stub_dead_before_the_server_first_looks_is_found_dead_and_its_memory_freed(repository, server, videos,
                                                                                      monkeypatch):
    import os
    import signal
    import time
    import uuid

    # The race seen in CI: a client kills a stub between the server's readiness and its first look at its
    # processes, where the dead stub is a zombie without a command line.
    look = processes.python_stubs
    killed, regions = [], set()
    answer = CslrClient(server.http_url).recognise_file(videos[0])

    def kill_preprocess_then_look(server_pid):
        if not killed:
            (pid,) = [pid for pid, model in look(server_pid).items() if model == "preprocess"]
            regions.update(processes.shm_regions([pid]))
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            deadline = time.monotonic() + 10
            while pid in look(server_pid):  # until a zombie, without a command line
                assert time.monotonic() < deadline
                time.sleep(0.05)
        return look(server_pid)

    monkeypatch.setattr(processes, "python_stubs", kill_preprocess_then_look)
    with TritonServer(repository, Ports(free_port(), free_port(), free_port())) as running:
        assert killed and "preprocess" not in running.stubs.values()
        assert running.dead_models() == ["preprocess"]
        regions |= processes.shm_regions(look(running.process.pid))
        # A region another server (another test session's, another user's) makes while this one runs.
        stranger = Path("/dev/shm") / f"{processes.SHM_REGION_PREFIX}{uuid.uuid4()}"
        stranger.write_bytes(b"\0" * 64)
    # Every stub's shared memory is gone, the killed one's too; the session's server, running all along, and the
    # stranger keep theirs, and the session's server answers as before.
    others = processes.shm_regions(look(server.process.pid))
    shm = set(os.listdir("/dev/shm"))
    assert len(regions) == 5 and not regions & shm  # preprocess, visual, ctc_decoder and two cslr instances
    assert len(others) == 5 and others <= shm
    assert stranger.exists()
    stranger.unlink()
    again = CslrClient(server.http_url).recognise_file(videos[0])
    assert (again.glosses, again.steps) == (answer.glosses, answer.steps)


@pytest.mark.timeout(180)
@pytest.mark.slow
def test_serve_exits_with_the_reason_when_a_python_model_dies(repository, videos):
    import os
    import signal
    import subprocess
    import sys
    import time

    ports = [free_port() for _ in range(3)]
    command = [sys.executable, "-m", "qslr.tools.cli", "serve", str(repository), "--http-port", str(ports[0]),
               "--grpc-port", str(ports[1]), "--metrics-port", str(ports[2])]
    serve = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
    try:
        client = CslrClient(f"127.0.0.1:{ports[0]}", timeout=20)
        deadline = time.monotonic() + 120
        # Ready is asked of the server's health endpoint; a server that exits instead fails at once, with its log.
        while not _ready(ports[0]):
            if serve.poll() is not None:
                pytest.fail(f"qslr serve exited with {serve.returncode} before it was ready:\n"
                            f"{serve.stdout.read()[-3000:]}")
            assert time.monotonic() < deadline, "qslr serve was not ready within 120 s"
            time.sleep(0.5)
        good = client.recognise_file(videos[0])
        assert good.glosses
        (tritonserver,) = [pid for pid, args in processes.child_processes(serve.pid).items()
                           if args[0].endswith("tritonserver")]
        stubs = {model: pid for pid, model in processes.python_stubs(tritonserver).items()}
        assert set(stubs) == {"preprocess", "visual", "ctc_decoder", "cslr"}
        os.kill(stubs["preprocess"], signal.SIGKILL)
        started = time.monotonic()
        with pytest.raises(Exception):  # noqa: B017 - an error, not a hang: "not healthy", or the server gone
            client.recognise_file(videos[0])
        assert time.monotonic() - started < 20
        # Stopping takes up to 40 s by design (SIGTERM, 30 s for in-flight requests, then SIGKILL).
        output, _ = serve.communicate(timeout=120)
    finally:
        if serve.poll() is None:
            # The server runs in a session of its own: killing the command alone would leave it running.
            for pid in processes.child_processes(serve.pid):
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)
            os.killpg(serve.pid, signal.SIGKILL)
    assert serve.returncode == 1
    assert "python model preprocess died (its stub process exited)" in output.splitlines()[-1], output[-2000:]


def _ready(port: int) -> bool:
    """The server's own readiness (HTTP 200 from /v2/health/ready); False while nothing answers yet."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=5) as response:
            return response.status == 200
    except urllib.error.HTTPError:
        return False  # up, not ready
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False  # nothing listening yet


def test_serve_fails_fast_when_the_port_is_taken(repository):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(cli, ["serve", str(repository), "--http-port", str(port), "--grpc-port",
                                          str(free_port()), "--metrics-port", str(free_port())])
    assert result.exit_code == 1 and f"http port {port} on 127.0.0.1 is already in use" in result.output


def test_serve_fails_fast_without_a_server_binary(repository, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(server_binary, "_pytriton_root", lambda: None)
    with pytest.raises(ServerError, match="no tritonserver found"):
        TritonServer(repository, Ports(free_port(), free_port(), free_port())).start()


def test_the_repository_is_complete_and_names_tensors_consistently(repository):
    for name in MODELS:
        config = (repository / name / "config.pbtxt").read_text()
        assert "${" not in config and f'name: "{name}"' in config
        assert (repository / name / "1").is_dir()
    declared = {v for k, v in vars(names).items() if k.isupper() and not k.endswith("_PARAMETER")}
    used = set()
    for path in SOURCES.rglob("config*.pbtxt.template"):
        used |= set(re.findall(r'name: "(\w+)"', path.read_text())) - set(MODELS)
    assert used <= declared, used - declared
    for model_py in SOURCES.glob("*/1/model.py"):
        assert not re.search(r'"(frames|lengths|log_probs|glosses|video)"', model_py.read_text()), model_py


def test_the_builder_refuses_what_it_cannot_build(checkpoint, tmp_path):
    with pytest.raises(ValueError, match="needs an engine"):
        build_repository(checkpoint, tmp_path / "r", RepositorySettings(visual="tensorrt"), 72, 72)
    assert not (tmp_path / "r").exists()


def test_infer_command_answers_as_qslr_recognise_does(server, videos, checkpoint):
    result = CliRunner().invoke(cli, ["infer", str(videos[0]), "--url", server.http_url, "--json", "--beam-size",
                                      "4", "--top-k", "3"])
    assert result.exit_code == 0, result.output
    served = json.loads(result.output)
    local = CliRunner().invoke(cli, ["recognise", str(videos[0]), "--checkpoint", str(checkpoint), "--json",
                                     "--beam", "4", "--top-k", "3"])
    assert local.exit_code == 0, local.output
    recognised = json.loads(local.output)
    assert [g["gloss"] for g in served["glosses"]] == [g["gloss"] for g in recognised["glosses"]]
    assert [a["glosses"] for a in served["alternatives"]] == [a["glosses"] for a in recognised["alternatives"]]
    assert len(served["alternatives"]) <= 3 and all(g["end"] > g["start"] for g in served["glosses"])
    bad = CliRunner().invoke(cli, ["infer", __file__, "--url", server.http_url])
    assert bad.exit_code == 1 and "error" in bad.output


def test_infer_over_grpc_answers_as_over_http(server, videos):
    answers = {}
    for protocol, url in (("http", server.http_url), ("grpc", server.grpc_url)):
        result = CliRunner().invoke(cli, ["infer", *map(str, videos[:2]), "--url", url, "--json", "--beam-size", "4",
                                          *(["--grpc"] if protocol == "grpc" else [])])
        assert result.exit_code == 0, result.output
        answers[protocol] = [json.loads(line) for line in result.output.splitlines()]
    assert len(answers["grpc"]) == 2 and answers["grpc"] == answers["http"]
    # An HTTP address given as gRPC is an error for that video, not a hang or a wrong answer.
    wrong = CliRunner().invoke(cli, ["infer", str(videos[0]), "--url", server.http_url, "--grpc"])
    assert wrong.exit_code == 1 and "error" in wrong.output

