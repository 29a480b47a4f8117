"""`qslr recognise`: local recognition against the real server's answers, PyTorch against onnxruntime, an
H.264 MP4, the JSON / CTM / reference outputs, and bad files failing alone."""

from __future__ import annotations

import json
import math
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner

from qslr.deploy.frontends.recognise import LocalRecogniser, ModelLoadError, load_checkpoint_model, load_onnx_model
from qslr.deploy.serving.client import CslrClient
from qslr.deploy.serving.recognition import Recognition
from qslr.pipelines.video_io import encode_video, read_video
from qslr.tools.cli import cli
from qslr.train.scoring.ctm import read_ctm


@pytest.fixture(scope="module")
def local(checkpoint) -> LocalRecogniser:
    return LocalRecogniser(load_checkpoint_model(checkpoint))


def assert_same(got: Recognition, expected: Recognition, tolerance: float = 1e-4) -> None:
    assert (got.glosses, got.steps) == (expected.glosses, expected.steps)
    assert got.start_s == pytest.approx(expected.start_s, abs=tolerance)
    assert got.end_s == pytest.approx(expected.end_s, abs=tolerance)
    assert [a.glosses for a in got.alternatives] == [a.glosses for a in expected.alternatives]
    assert [a.score for a in got.alternatives] == pytest.approx([a.score for a in expected.alternatives], abs=1e-3)


@pytest.mark.slow
def test_local_recognition_equals_the_servers_answer(server, local, videos):
    client = CslrClient(server.http_url)
    for video in videos[:5]:
        for beam_size, top_k in ((0, None), (10, 3), (None, None)):
            served = client.recognise_file(video, beam_size, top_k)
            assert_same(local.recognise(video, local.options(beam_size, top_k)), served)


def test_onnx_equals_the_checkpoint(repository, local, videos):
    graph = load_onnx_model(repository / "visual" / "1" / "model.onnx")
    assert (graph.height, graph.width, graph.vocab, graph.decoder) == (local.model.height, local.model.width,
                                                                      local.model.vocab, local.model.decoder)
    assert graph.decoder.fps == 25.0 and graph.decoder.frames_per_step == 4
    onnx = LocalRecogniser(graph)
    for video in videos[:4]:
        options = local.options(10, 3)
        assert_same(onnx.recognise(video, options), local.recognise(video, options))
    # The graph's crop offsets are constants: another frame size is refused at load, not at the first video.
    with pytest.raises(ModelLoadError, match="takes 72x72 frames"):
        load_onnx_model(repository / "visual" / "1" / "model.onnx", height=96, width=96)


def write_h264(path: Path, frames: np.ndarray, fps: int) -> None:
    # Constant quantiser 0: lossless on the 4:2:0 planes, which the WebM's frames already come from.
    encode_video(path, frames, fps, "libx264", codec_options={"qp": "0", "preset": "ultrafast"})


def test_an_h264_mp4_is_recognised_as_the_webm_of_its_frames(local, videos, tmp_path):
    video = videos[0]
    frames, fps = read_video(video)
    mp4 = tmp_path / "same.mp4"
    write_h264(mp4, frames, round(fps))
    with av.open(str(mp4)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
    decoded, mp4_fps = read_video(mp4)
    assert decoded.shape == frames.shape and mp4_fps == fps
    assert np.abs(decoded.astype(int) - frames).mean() < 1.0
    options = local.options(10, 3)
    assert_same(local.recognise(mp4, options), local.recognise(video, options))


def run_cli(*arguments: str):
    return CliRunner().invoke(cli, ["recognise", *arguments])


def test_json_and_ctm_agree(checkpoint, local, videos, tmp_path):
    ctm = tmp_path / "out.ctm"
    result = run_cli(*map(str, videos[:3]), "--checkpoint", str(checkpoint), "--json", "--ctm", str(ctm))
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["video"] for r in records] == [str(v) for v in videos[:3]]
    written = read_ctm(ctm)
    for record, video in zip(records, videos[:3], strict=True):
        expected = local.recognise(video, local.options())
        assert [g["gloss"] for g in record["glosses"]] == expected.glosses
        assert [g["start"] for g in record["glosses"]] == pytest.approx(expected.start_s, abs=1e-4)
        entries = written.get(video.stem, [])
        assert [word for _, word in entries] == expected.glosses
        assert [start for start, _ in entries] == pytest.approx(expected.start_s, abs=1e-3)
    lines = [line.split() for line in ctm.read_text().splitlines()]
    glosses = [(video.stem, g) for record, video in zip(records, videos[:3], strict=True) for g in record["glosses"]]
    assert len(lines) == len(glosses) > 0
    for fields, (utterance, gloss) in zip(lines, glosses, strict=True):
        assert (fields[0], fields[1], fields[4]) == (utterance, "1", gloss["gloss"])
        assert float(fields[3]) == pytest.approx(gloss["end"] - gloss["start"], abs=1e-3)
        assert float(fields[3]) > 0


def test_text_output_lists_each_gloss_with_its_span(checkpoint, local, videos):
    result = run_cli(str(videos[0]), "--checkpoint", str(checkpoint), "--beam", "10", "--top-k", "3")
    assert result.exit_code == 0, result.output
    expected = local.recognise(videos[0], local.options(10, 3))
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{videos[0]}: {' '.join(expected.glosses)}")
    assert expected.spans, "the model recognised nothing: there is no span to compare"
    spans = lines[1:1 + len(expected.spans)]
    for line, (gloss, start, end) in zip(spans, expected.spans, strict=True):
        assert line.split() == [f"{start:.2f}-{end:.2f}", "s", gloss]
    # Alternatives are listed exactly when the beam found more than the answer.
    assert ("alternatives:" in result.stdout) == (len(expected.alternatives) > 1)


def test_a_reference_gives_the_wer_and_its_alignment(checkpoint, local, videos, tmp_path):
    video = next(v for v in videos if len(local.recognise(v, local.options()).glosses) >= 3)
    hypothesis = local.recognise(video, local.options()).glosses
    n = len(hypothesis)
    substituted_and_deleted = [hypothesis[0], "WRONG", *hypothesis[2:], "MISSING"]  # S 1, D 1 of n + 1
    inserted = tmp_path / "ref.txt"
    inserted.write_text(" ".join(hypothesis[1:]) + "\n")  # the first recognised gloss is an insertion
    args = ["--checkpoint", str(checkpoint), "--json"]
    result = run_cli(str(video), str(video), str(video), *args, "--ref", " ".join(hypothesis),
                     "--ref", " ".join(substituted_and_deleted), "--ref", str(inserted))
    assert result.exit_code == 0, result.output
    exact, wrong, extra = (json.loads(line)["reference"] for line in result.stdout.splitlines())
    assert (exact["wer"], exact["hits"], exact["substitutions"], exact["deletions"], exact["insertions"]) == \
        (0.0, n, 0, 0, 0)
    assert (wrong["substitutions"], wrong["deletions"], wrong["insertions"], wrong["hits"]) == (1, 1, 0, n - 1)
    assert wrong["wer"] == pytest.approx(2 / (n + 1))
    assert (extra["insertions"], extra["substitutions"], extra["deletions"]) == (1, 0, 0)
    assert extra["wer"] == pytest.approx(1 / (n - 1))
    text = run_cli(str(video), "--checkpoint", str(checkpoint), "--ref", " ".join(substituted_and_deleted))
    assert "WER " in text.stdout and f"{100 * 2 / (n + 1):.1f} %" in text.stdout
    assert "REF:" in text.stdout and "WRONG" in text.stdout and "HYP:" in text.stdout


def test_a_bad_file_fails_alone_with_one_line(checkpoint, videos, tmp_path):
    corrupt = tmp_path / "corrupt.webm"
    corrupt.write_bytes(b"\x1a\x45\xdf\xa3" + bytes(range(256)) * 8)
    missing = tmp_path / "missing.mp4"
    result = run_cli(str(videos[0]), str(corrupt), str(missing), str(videos[1]), "--checkpoint", str(checkpoint),
                     "--json")
    assert result.exit_code == 1
    assert [json.loads(line)["video"] for line in result.stdout.splitlines()] == [str(videos[0]), str(videos[1])]
    errors = result.stderr.splitlines()
    assert len(errors) == 3, errors
    assert errors[0].startswith(f"{corrupt}: ") and errors[1].startswith(f"{missing}: ")
    assert "2 of 4 videos could not be recognised" in errors[2]


@pytest.mark.parametrize("arguments, message", [
    ([], "give a model"),
    (["--beam", "0", "--top-k", "2"], "--top-k 2 needs a beam"),
    (["--beam", "11"], "--beam must be an integer in 0..10"),
    (["--ref", "A B", "--ref", "C"], "--ref was given 2 times for 1 videos"),
])
def test_bad_options_are_refused_before_any_video(checkpoint, videos, arguments, message):
    model = [] if message == "give a model" else ["--checkpoint", str(checkpoint)]
    result = run_cli(str(videos[0]), *model, *arguments)
    assert result.exit_code == 2 and message in result.output, result.output


def test_an_unknown_frame_rate_gives_no_spans_but_ctm_steps(local, videos, tmp_path):
    from qslr.deploy.frontends.recognise_cli import ctm_lines

    result = local.recognise(videos[0], local.options())
    unknown = Recognition(result.glosses, result.steps, result.score, [math.nan] * len(result.glosses),
                          [math.nan] * len(result.glosses), result.alternatives)
    lines = ctm_lines("x", unknown)
    assert [line.split()[4] for line in lines] == result.glosses
    assert [float(line.split()[2]) for line in lines] == pytest.approx([s / 100 for s in result.steps])


@pytest.mark.slow
def test_recognising_with_a_checkpoint_imports_no_onnx(checkpoint, videos):
    """A base install (no `serve` extra) has no onnx: `qslr recognise --checkpoint` must not need it."""
    import subprocess
    import sys

    script = ("import sys\n"
              "from qslr.deploy.frontends.recognise import LocalRecogniser, load_checkpoint_model\n"
              f"recogniser = LocalRecogniser(load_checkpoint_model({str(checkpoint)!r}))\n"
              f"assert recogniser.recognise({str(videos[0])!r}, recogniser.options(10, 1)).steps is not None\n"
              "print(sorted(name for name in sys.modules if name.split('.')[0] in ('onnx', 'onnxruntime')))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
