"""The python models of a built repository run in this process through the stand-in of python_backend
(tests/resources/pb_utils_standin): their failure branches, each request answered or refused alone, and BLS
calls whose outputs a GPU model leaves in GPU memory."""

from __future__ import annotations

import importlib.util
import logging
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper
from served_settings import MAX_FRAMES, MAX_SECONDS

from qslr.deploy import served_video
from qslr.deploy import tensor_names as names
from qslr.deploy.frontends.recognise import LocalRecogniser, load_checkpoint_model
from qslr.deploy.served_limits import ServedLimits
from qslr.deploy.serving.buffered import WindowPlan
from qslr.deploy.serving.ragged_batch import length_groups
from qslr.deploy.serving.repository_checks import read_config
from qslr.deploy.serving.triton_parameters import called_model_error, failed_response
from qslr.deploy.serving.triton_repository import RepositorySettings, build_repository
from qslr.pipelines.long_videos import choose_clips, join_clips
from qslr.pipelines.prepared import PreparedDataset
from qslr.pipelines.video_io import write_vp9

INVALID_ARG, INTERNAL = 3, 1  # TRITONSERVER_Error_Code
_LIMITS = ServedLimits(max_frames=MAX_FRAMES, max_seconds=MAX_SECONDS)  # the session repository's


@pytest.fixture(scope="module")
def long_videos(tiny_corpus, tmp_path_factory):
    """Two videos longer than the served frames, so longer than one window: every training clip joined, and
    the fewest first ones that are."""
    dataset = PreparedDataset(tiny_corpus[0])
    folder = tmp_path_factory.mktemp("long-in-process")
    train = dataset.records("train")
    fewest = next(n for n in range(1, len(train)) if sum(r.num_frames for r in train[:n]) > MAX_FRAMES)
    joined = [join_clips(dataset, choose_clips(dataset, "train", count), folder / f"joined{count}.webm")
              for count in (len(train), fewest)]
    return [(folder / video.video, video.frames) for video in joined]


@pytest.fixture
def visual_failing_at(repository, tmp_path):
    """``visual_failing_at(n)``: a copy of the repository whose graph fails (a Gather out of its range, in
    onnxruntime) on any batch holding a clip of ``n`` frames, and answers every other batch as before."""
    def build(length: int):
        root = tmp_path / f"failing-at-{length}"
        shutil.copytree(repository, root)
        path = root / "visual" / "1" / "model.onnx"
        model = onnx.load(path)
        graph = model.graph
        for node in graph.node:
            node.output[:] = ["log_probs_before" if o == names.LOG_PROBS else o for o in node.output]
        graph.initializer.extend([numpy_helper.from_array(np.array([length], np.int64), "poison_length"),
                                  numpy_helper.from_array(np.zeros(1, np.float32), "poison_table")])
        graph.node.extend([
            helper.make_node("Equal", [names.LENGTHS, "poison_length"], ["poisoned"]),
            helper.make_node("Cast", ["poisoned"], ["poisoned_int"], to=onnx.TensorProto.INT64),
            helper.make_node("ReduceMax", ["poisoned_int"], ["poison_index"], keepdims=0),
            helper.make_node("Gather", ["poison_table", "poison_index"], ["poison_zero"]),
            helper.make_node("Add", ["log_probs_before", "poison_zero"], [names.LOG_PROBS])])
        onnx.save(model, path)
        return root

    return build


def _video(path) -> dict[str, np.ndarray]:
    return {names.VIDEO: np.frombuffer(path.read_bytes(), dtype=np.uint8)[None]}


def _plan(repository) -> WindowPlan:
    parameters = {k: v.string_value for k, v in read_config(repository / "cslr" / "config.pbtxt").parameters.items()}
    return WindowPlan(int(parameters["window_frames"]), int(parameters["context_frames"]),
                      int(parameters["frames_per_step"]))


def _same(answer, expected) -> None:
    assert answer.code is None and expected.code is None, (answer.message, expected.message)
    assert sorted(answer.outputs) == sorted(expected.outputs)
    for name, values in expected.outputs.items():
        np.testing.assert_array_equal(answer.outputs[name], values, err_msg=name)


def test_the_standin_places_bls_outputs_as_python_backend_does(standin):
    """The stand-in itself, against python_backend's sources: outputs of a GPU model stay in GPU memory unless the
    request prefers CPU memory, only the requested outputs come back, and Triton's and the stub's refusals."""
    utils = standin(gpu_models={"visual"}).model("cslr").utils  # a model's module, its requests routed by the stand-in
    frames, lengths = np.zeros((1, 20, 72, 72, 3), np.uint8), np.array([[20]], np.int64)

    def ask(frames=frames, **options):
        return utils.InferenceRequest(model_name="visual", inputs=[utils.Tensor(names.FRAMES, frames),
                                                                   utils.Tensor(names.LENGTHS, lengths)],
                                      requested_output_names=[names.LOG_PROBS], **options).exec()

    on_gpu = utils.get_output_tensor_by_name(ask(), names.LOG_PROBS)
    assert not on_gpu.is_cpu()
    with pytest.raises(utils.TritonModelException, match=r"^Tensor is stored in GPU and cannot be converted to NumPy"):
        on_gpu.as_numpy()
    on_cpu = ask(preferred_memory=utils.PreferredMemory(utils.TRITONSERVER_MEMORY_CPU, 0))
    assert utils.get_output_tensor_by_name(on_cpu, names.LOG_PROBS).as_numpy().shape[:2] == (1, 5)
    assert utils.get_output_tensor_by_name(on_cpu, names.OUTPUT_LENGTHS) is None  # not asked for
    with pytest.raises(utils.TritonModelException, match="bool/int/str, found type <class 'float'>"):
        ask(parameters={"beam_size": 2.5})
    refused = ask(frames=frames.astype(np.float32))
    assert refused.has_error() and refused.error().message() == (
        "inference input 'frames' data-type is 'FP32', but model 'visual' expects 'UINT8'")


def test_failed_response_tells_a_bad_input_from_a_bug(pb_utils, caplog):
    with caplog.at_level(logging.ERROR, logger="triton_python_backend"):
        refused = failed_response(pb_utils, "visual", ValueError("video too long: 9 frames\nsecond line"))
        assert not caplog.records  # a refusal is the client's, not the server log's business
        failed = failed_response(pb_utils, "visual", KeyError("height"))
        silent = failed_response(pb_utils, "visual", RuntimeError())
    assert (refused.error().code(), refused.error().message()) == (INVALID_ARG, "visual: video too long: 9 frames")
    assert (failed.error().code(), failed.error().message()) == (INTERNAL, "visual: unexpected KeyError: 'height'")
    assert silent.error().message() == "visual: unexpected RuntimeError: RuntimeError"
    assert "KeyError: 'height'" in caplog.records[0].getMessage()  # the bug's traceback, in the server log
    assert refused.has_error() and not refused.output_tensors()


def test_a_called_models_refusal_stays_a_refusal_when_its_code_is_lost(pb_utils):
    """nvidia-pytriton's python_backend hands a BLS caller (cslr) every error as INTERNAL: a refusal made by
    failed_response keeps INVALID_ARG by its message; a bug of ours or an error of Triton's own stays INTERNAL."""
    def called(message, code=INTERNAL):
        error = called_model_error(pb_utils, pb_utils.TritonError(message, code))
        return error.code(), error.message()

    refusal = failed_response(pb_utils, "preprocess", ValueError("video bytes: cannot decode this video")).error()
    bug = failed_response(pb_utils, "visual", KeyError("height")).error()
    assert called(refusal.message()) == (INVALID_ARG, "preprocess: video bytes: cannot decode this video")
    assert called(f"in ensemble 'cslr_clip', {refusal.message()}") == (INVALID_ARG, refusal.message())
    assert called(bug.message()) == (INTERNAL, "visual: unexpected KeyError: 'height'")
    assert called("Request for unknown model: 'visual' is not found") == (INTERNAL, "Request for unknown model: "
                                                                                   "'visual' is not found")
    assert called(refusal.message(), INVALID_ARG)[0] == INVALID_ARG  # a code that arrived is kept


def test_visual_runs_a_failing_batch_clip_by_clip(standin, visual_failing_at):
    server = standin(visual_failing_at(21))
    rng = np.random.default_rng(0)
    lengths = [20, 21, 20]  # one group of lengths: one batched call, which the 21-frame clip fails
    assert length_groups(lengths, server.model("visual").instance.max_padding) == [[0, 2, 1]]
    requests = [{names.FRAMES: rng.integers(0, 256, (1, n, 72, 72, 3), dtype=np.uint8),
                 names.LENGTHS: np.array([[n]], dtype=np.int64)} for n in lengths]
    alone = [server.infer("visual", [request])[0] for request in requests]
    assert alone[1].code == INTERNAL and alone[1].message.startswith("visual: unexpected ")
    batched = server.infer("visual", requests)
    assert (batched[1].code, batched[1].message) == (alone[1].code, alone[1].message)
    for answer, expected in zip(batched[::2], alone[::2], strict=True):
        _same(answer, expected)


@pytest.mark.parametrize("decoder", ["pyav", None])  # None: the repository's own (DALI's where installed)
def test_preprocess_refuses_uploads_alone(standin, repository, checkpoint, videos, long_videos, decoder, tmp_path):
    root = repository if decoder is None else build_repository(
        checkpoint, tmp_path / "repo", RepositorySettings(video_decoder=decoder, limits=_LIMITS), 72, 72)
    server = standin(root)
    good = _video(videos[0])
    garbage = {names.VIDEO: np.frombuffer(b"not a video at all" * 10, dtype=np.uint8)[None]}
    too_long, frames = long_videos[0]
    answers = server.infer("preprocess", [garbage, good, _video(too_long), good])
    for answer in (answers[0], answers[2]):
        assert answer.code == INVALID_ARG and answer.message.startswith("preprocess: "), answer
    assert frames > MAX_FRAMES and "video too long" in answers[2].message
    alone = server.infer("preprocess", [good])[0]
    _same(answers[1], alone)
    _same(answers[3], alone)


def test_preprocess_reports_its_decoders_failure_as_its_own(standin, checkpoint, videos, tmp_path, monkeypatch):
    """The PyAV decoder cannot start its threads (the process is out of them): a fault of the server, INTERNAL,
    not of the uploads; and the next batch is served."""
    server = standin(build_repository(checkpoint, tmp_path / "repo",
                                      RepositorySettings(video_decoder="pyav", limits=_LIMITS), 72, 72))
    good = _video(videos[0])
    expected = server.infer("preprocess", [good])[0]

    def no_thread(*args, **kwargs):
        raise RuntimeError("can't start new thread")

    with monkeypatch.context() as patched:
        patched.setattr(served_video, "ThreadPoolExecutor", no_thread)
        failed = server.infer("preprocess", [good, good])
    assert [(a.code, a.message) for a in failed] == [(INTERNAL, "preprocess: unexpected RuntimeError: can't start "
                                                                "new thread")] * 2
    _same(server.infer("preprocess", [good])[0], expected)


def test_a_dali_gpu_preprocess_without_nvdec_serves_pyavs_frames_and_says_so_once(standin, checkpoint, videos,
                                                                                      tmp_path, caplog):
    """No GPU here: the `dali-gpu` preprocess loads, its uploads are decoded by PyAV, and the server log says so in
    one line. (On a GPU, NVDEC starts, and the corpus's 72x72 frames, under NVDEC's minimum, go to PyAV: one
    line too.)"""
    pytest.importorskip("nvidia.dali", reason="the DALI decoder needs nvidia-dali")
    root = build_repository(checkpoint, tmp_path / "repo", RepositorySettings(video_decoder="dali-gpu",
                                                                              limits=_LIMITS), 72, 72)
    assert "KIND_GPU" in (root / "preprocess" / "config.pbtxt").read_text()
    with caplog.at_level(logging.WARNING, logger="triton_python_backend"):
        server = standin(root)
        answers = [a for batch in ([videos[0], videos[1]], [videos[2]]) for a in
                   server.infer("preprocess", [_video(v) for v in batch])]
    said = [r.getMessage() for r in caplog.records if r.name == "triton_python_backend"]
    assert len(said) == 1 and said[0].startswith("dali-gpu video decoder: ") and "so PyAV decodes" in said[0], said
    expected = served_video.clip_decoder("pyav", 72, 72, _LIMITS).decode(videos[:3])
    for answer, clip in zip(answers, expected, strict=True):
        length = int(answer.outputs[names.LENGTHS][0, 0])
        assert length == len(clip.frames) and np.array_equal(answer.outputs[names.FRAMES][0, :length], clip.frames)
    assert server.model("preprocess").instance.decoder.fallbacks.total == 3


def test_ctc_decoder_refuses_each_bad_request_alone(standin):
    server = standin()
    classes = int(server.model("ctc_decoder").config["input"][0]["dims"][-1])
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(1, 12, classes)).astype(np.float32)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))

    def request(steps=12):
        return {names.LOG_PROBS: log_probs, names.OUTPUT_LENGTHS: np.array([[steps]], dtype=np.int64),
                names.LENGTHS: np.array([[48]], dtype=np.int64)}

    cases = [(request(), {}, None), (request(), {"beam_size": 11}, "beam_size must be an integer in 0..10"),
             (request(), {"beam_size": 2.5}, "beam_size must be an integer"),
             (request(), {"beam_size": 0, "top_k": 2}, "top_k 2 needs a beam at least as wide"),
             (request(13), {}, "do not fit log-probabilities"), (request(), {"beam_size": 3, "top_k": 2}, None)]
    answers = server.infer("ctc_decoder", [c[0] for c in cases], [c[1] for c in cases])
    for (inputs, parameters, problem), answer in zip(cases, answers, strict=True):
        if problem is None:
            _same(answer, server.infer("ctc_decoder", [inputs], [parameters])[0])
        else:
            assert answer.code == INVALID_ARG and answer.message.startswith("ctc_decoder: ")
            assert problem in answer.message, answer.message


def test_cslr_answers_each_long_video_alone(standin, repository, long_videos, visual_failing_at, tmp_path):
    plan = _plan(repository)
    (failing, failing_frames), (good, good_frames) = long_videos
    lengths = {w.stop - w.start for w in plan.windows(good_frames)}
    poison = next(n for n in (w.stop - w.start for w in plan.windows(failing_frames)) if n not in lengths)
    too_long = tmp_path / "too-long.webm"
    write_vp9(too_long, (np.full((72, 72, 3), i % 255, np.uint8) for i in range(int(MAX_SECONDS + 1) * 25)), 25)
    server = standin(visual_failing_at(poison))
    requests = [_video(failing), _video(good), _video(good), _video(too_long)]
    answers = server.infer("cslr", requests, [{}, {}, {"beam_size": 2.5}, {}])
    # visual's failure and the decoder's refusal are passed on as those models gave them
    assert answers[0].code == INTERNAL and answers[0].message.startswith("visual: unexpected "), answers[0]
    _same(answers[1], standin().infer("cslr", [_video(good)])[0])
    assert answers[2].code == INVALID_ARG and answers[2].message.startswith("ctc_decoder: beam_size must be")
    assert answers[3].code == INVALID_ARG and answers[3].message.startswith("cslr: video too long"), answers[3]


@pytest.mark.parametrize(("model", "heavy"), [("visual", ["onnxruntime"]), ("ctc_decoder", [])])
def test_a_model_imports_only_what_it_runs(repository, standin_folder, model, heavy):
    """Every server start loads the models: `visual` runs onnxruntime, `ctc_decoder` flashlight, and neither
    PyTorch nor onnx (2.5 s and 780 MB more for `visual` when it opened its session through onnx_export, 1.9 s
    and 610 MB for `ctc_decoder` when the decoding module imported torch)."""
    script = (f"import sys; sys.path.insert(0, {str(standin_folder)!r}); import standin_server; "
              f"standin_server.StandinServer({str(repository)!r}).model({model!r}); "
              "print(' '.join(m for m in ('torch', 'onnx', 'onnxruntime', 'av', 'qslr.train') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert loaded.stdout.split() == heavy, loaded.stderr


def test_cslr_reads_a_gpu_visual_models_windows_from_cpu_memory(standin, repository, checkpoint, long_videos):
    """A tensorrt_plan `visual` leaves its outputs in GPU memory unless the BLS request asks for CPU memory, and
    `cslr` reads them with as_numpy: a long video must still get the answer it gets from a CPU visual model."""
    video, _ = long_videos[0]
    on_gpu = standin(gpu_models={"visual"}).infer("cslr", [_video(video)])[0]
    on_cpu = standin().infer("cslr", [_video(video)])[0]
    _same(on_gpu, on_cpu)
    local = LocalRecogniser(load_checkpoint_model(checkpoint), _LIMITS, _plan(repository))
    output, _ = local.outputs(video)
    assert output.windows > 1  # the windows path, through `visual` by BLS
    expected = local.recognise(video, local.options(None, None))
    assert [g.decode() for g in on_cpu.outputs[names.GLOSSES][0]] == expected.glosses


@pytest.mark.skipif(importlib.util.find_spec("ctcdecode") is not None, reason="ctcdecode is installed here")
def test_a_checkpoint_decoded_with_ctcdecode_is_not_served_with_another_backend(checkpoint, tmp_path):
    """Served with flashlight, a checkpoint evaluated with ctcdecode would answer other than `qslr eval run`."""
    data = torch.load(checkpoint, weights_only=False)
    data["config"]["decode"]["backend"] = "ctcdecode"
    ctcdecode_checkpoint = tmp_path / "ctcdecode.pt"
    torch.save(data, ctcdecode_checkpoint)
    out = tmp_path / "repo"
    with pytest.raises(ValueError) as refused:
        build_repository(ctcdecode_checkpoint, out, RepositorySettings(limits=_LIMITS), 72, 72)
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"{ctcdecode_checkpoint}: decode.backend=ctcdecode "), message
    assert "ctcdecode package" in message and not out.exists()


def test_the_served_decoder_searches_with_the_repositorys_backend(standin, repository, tmp_path):
    assert standin().model("ctc_decoder").instance.decoder.settings.backend == "flashlight"  # the checkpoint's
    config = (repository / "ctc_decoder" / "config.pbtxt").read_text()
    line = '{ key: "backend" value: { string_value: "flashlight" } }'
    assert line in config
    older, other = tmp_path / "older", tmp_path / "ctcdecode"
    for root, text in ((older, config.replace(f",\n  {line}", "")), (other, config.replace("flashlight", "ctcdecode"))):
        shutil.copytree(repository, root)
        (root / "ctc_decoder" / "config.pbtxt").write_text(text)
    # A repository built before the setting existed searched with flashlight, and still does.
    assert standin(older).model("ctc_decoder").instance.decoder.settings.backend == "flashlight"
    if importlib.util.find_spec("ctcdecode") is None:
        with pytest.raises(ImportError, match="ctcdecode"):
            standin(other).model("ctc_decoder")
    else:
        assert standin(other).model("ctc_decoder").instance.decoder.beams[1]._beam.__class__.__name__ == (
            "_CtcdecodeBeam")
