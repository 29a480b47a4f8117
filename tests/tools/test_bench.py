"""The benchmarks run end to end, print their table and write JSON with the same-run ratios."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from small_model import SMALL_MODEL

from qslr.pipelines.prepared import PreparedDataset
from qslr.tools.cli import cli


def test_bench_decode_writes_json_with_ratios(tmp_path):
    out = tmp_path / "decode.json"
    result = CliRunner().invoke(cli, ["bench", "decode", "--utterances", "4", "--repeats", "2", "--steps", "20",
                                      "--classes", "50", "--json-out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    rows = {row["name"]: row for row in data["results"]}
    assert {"flashlight beam", "greedy", "pyctcdecode beam"} <= set(rows)
    # Ratios are against the beam search measured in the same run: greedy decoding does far less work.
    assert rows["greedy"]["ratio"] > 2 and len(rows["greedy"]["per_second"]) == 2
    assert rows["greedy"]["ratio"] == pytest.approx(rows["greedy"]["median"] / rows["flashlight beam"]["median"],
                                                    rel=1e-6)
    assert data["notes"]["agreement_with_flashlight"]["greedy"] == 1.0  # peaky input: greedy finds the same
    assert "decodes/s" in result.output


def test_bench_score_compares_with_sclite(tmp_path):
    out = tmp_path / "score.json"
    result = CliRunner().invoke(cli, ["bench", "score", "--utterances", "30", "--repeats", "1", "--json-out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert [row["name"] for row in data["results"]] == ["qslr python scorer", "sclite"]
    wers = data["notes"]["wer"]
    assert wers["qslr python scorer"] == wers["sclite"]


@pytest.mark.slow
def test_bench_data_compares_dali_with_the_reference_loader(tiny_corpus, tmp_path):
    out = tmp_path / "data.json"
    result = CliRunner().invoke(cli, ["bench", "data", "--data", str(tiny_corpus[0]), "--repeats", "1",
                                      "--max-batches", "1", "--json-out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert [row["name"] for row in data["results"]] == ["reference DataLoader", "DALI (cpu)"]
    assert all(row["median"] > 0 for row in data["results"])
    assert set(data["notes"]["peak_rss_mib"]) == {"reference DataLoader", "DALI (cpu)"}


@pytest.mark.slow
def test_bench_infer_compares_onnxruntime_with_eager(checkpoint, tiny_corpus, tmp_path):
    out = tmp_path / "infer.json"
    result = CliRunner().invoke(cli, ["bench", "infer", "--checkpoint", str(checkpoint), "--batch", "1", "--batch",
                                      "2", "--frames", "32", "--repeats", "1", "--json-out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert [r["name"] for r in data["results"]] == [
        "eager b1", "onnxruntime b1", "onnxruntime fp16 b1", "onnxruntime int8 b1",
        "eager b2", "onnxruntime b2", "onnxruntime fp16 b2", "onnxruntime int8 b2"]
    assert "not measured" in data["notes"]["tensorrt"]
    assert set(data["notes"]["int8_over_fp32_onnxruntime"]) == {"b1", "b2"}
    train_videos = len(PreparedDataset(tiny_corpus[0]).records("train"))
    assert data["settings"]["calibration_clips"] == min(16, train_videos)  # the checkpoint's training clips


@pytest.mark.slow
def test_bench_serve_checks_every_answer_and_where_the_time_went(checkpoint, tmp_path):
    out = tmp_path / "serve.json"
    result = CliRunner().invoke(cli, ["bench", "serve", "--checkpoint", str(checkpoint), "--concurrency", "1",
                                      "--concurrency", "4", "--requests", "16", "--videos", "2", "--corrupt-share",
                                      "0.5", "--decoder", "pyav", "--json-out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert [r["name"] for r in data["results"]] == ["pyav, no batching c1", "pyav, dynamic batching c1",
                                                    "pyav, no batching c4", "pyav, dynamic batching c4"]
    offline = data["notes"].pop("offline_ms_per_clip")
    assert set(offline) == {"pyav"} and all(ms > 0 for ms in offline["pyav"].values())
    decoding = data["notes"].pop("offline_decoding_ms_per_clip")
    assert set(decoding) == {"pyav, one at a time", "pyav, batches of 8"} and min(decoding.values()) > 0
    for name, run in data["notes"].items():
        assert run["wrong"] == run["failed"] == run["lost"] == run["corrupt_accepted"] == 0 and run["valid"] == 8
        accepted = sum(run["corrupt_answered"].values())
        assert sum(run["corrupt_refused"].values()) + accepted == 8
        # Bit flips may leave a decodable video; every other kind is no video at all, or a cut one.
        assert set(run["corrupt_refused"]) >= {"random bytes", "text", "empty", "header alone",
                                               "truncated to a seventh", "truncated to a half"}, run
        # Triton counts the requests each model answered: cslr (the python model every upload goes to) and
        # preprocess all 16 (a refusal is an answer of its own), the later stages the valid ones and the corrupt
        # ones preprocess let through.
        for model in ("preprocess", "visual", "ctc_decoder", "cslr"):
            stage = run["stages"][model]
            assert stage["requests"] == (16 if model in ("preprocess", "cslr") else 8 + accepted), (name, model, stage)
            assert stage["compute_ms"] > 0
            if "no batching" in name:
                assert stage["executions"] == stage["requests"], (name, model, stage)
            else:
                assert 1 <= stage["executions"] <= stage["requests"]
        assert 0 < run["stages"]["visual"]["compute_ms"] < run["stages"]["cslr"]["compute_ms"]


@pytest.mark.slow
def test_bench_serve_loads_a_running_server_as_it_is(checkpoint, server, tmp_path):
    out = tmp_path / "serve-url.json"
    result = CliRunner().invoke(cli, ["bench", "serve", "--checkpoint", str(checkpoint), "--concurrency", "2",
                                      "--requests", "6", "--videos", "2", "--url", server.http_url, "--json-out",
                                      str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    name = f"server at {server.http_url}"
    assert [r["name"] for r in data["results"]] == [f"{name} c2"] and data["results"][0]["ratio"] == 1.0
    run = data["notes"][f"{name} c2"]
    assert run["valid"] == 6 and run["wrong"] == run["failed"] == run["lost"] == 0
    assert {"preprocess", "visual", "ctc_decoder", "cslr"} <= set(run["stages"])
    refused = CliRunner().invoke(cli, ["bench", "serve", "--url", server.http_url, "--int8"])
    assert refused.exit_code == 2 and "--url loads the server running there as it is" in refused.output
    nobody = CliRunner().invoke(cli, ["bench", "corrupt", "--checkpoint", str(checkpoint), "--url", "127.0.0.1:9"])
    assert nobody.exit_code == 1 and "127.0.0.1:9: no ready tritonserver answers there" in nobody.output


@pytest.mark.not_on_gpu
def test_gpu_check_proves_nothing_without_a_gpu_and_says_why(tmp_path):
    from qslr.tools.gpu_check import EXIT_NOT_PROVEN, ON_REQUEST, PARTS

    out = tmp_path / "gpu.json"
    result = CliRunner().invoke(cli, ["bench", "gpu-check", "--out", str(out)])
    assert result.exit_code == EXIT_NOT_PROVEN != 0, result.output
    parts = {part["part"]: part for part in json.loads(out.read_text())["parts"]}
    assert list(parts) == [spec.id for spec in PARTS if spec.id not in ON_REQUEST] and len(parts) >= 10
    for name, part in parts.items():
        assert part["status"] == "not proven" and part["reason"].startswith("no CUDA device"), name
        assert f"{name}: " in result.output
    assert f"0 of {len(parts)} parts proven" in result.output
    # Narrowed to parts that cannot run here, as to the one that needs two GPUs, it fails all the same.
    narrowed = CliRunner().invoke(cli, ["bench", "gpu-check", "--out", str(out), "--only", "ddp", "--only",
                                        "inference"])
    assert narrowed.exit_code == EXIT_NOT_PROVEN, narrowed.output
    parts = json.loads(out.read_text())["parts"]
    assert [(part["part"], part["status"]) for part in parts] == [("inference", "not proven"), ("ddp", "not proven")]


@pytest.mark.slow
def test_bench_train_reports_throughput_and_data_wait(tiny_corpus, tmp_path):
    out = tmp_path / "train.json"
    result = CliRunner().invoke(cli, ["bench", "train", "--data", str(tiny_corpus[0]), "--steps", "2", "--nproc", "1",
                                      "--loader", "dali", "--loader", "reference", "--json-out", str(out),
                                      *SMALL_MODEL])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert [r["name"] for r in data["results"]] == ["dali, 1 process", "reference, 1 process"]
    assert all(0 <= v["data_wait_fraction"] <= 1 and v["frames_per_s"] > 0 for v in data["notes"].values())


@pytest.mark.slow
def test_bench_corrupt_counts_every_valid_and_broken_request(checkpoint, server, tmp_path):
    out = tmp_path / "corrupt.json"
    result = CliRunner().invoke(cli, ["bench", "corrupt", "--checkpoint", str(checkpoint), "--requests", "40",
                                      "--concurrency", "8", "--share", "0.5", "--videos", "2", "--url",
                                      server.http_url, "--json-out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert [r["name"] for r in data["results"]] == ["0% broken", "50% broken"]
    assert data["results"][0]["ratio"] == 1.0
    clean, broken = data["notes"]["0% broken"], data["notes"]["50% broken"]
    assert clean["valid"] == 40 and broken["valid"] == 20
    for run in (clean, broken):
        assert run["lost"] == run["wrong"] == run["failed"] == run["corrupt_accepted"] == 0
    assert sum(broken["corrupt_refused"].values()) + sum(broken["corrupt_answered"].values()) == 20
    # The first broken uploads sent are the ones nothing can be read from: all refused.
    assert {"random bytes", "text", "empty", "header alone"} <= set(broken["corrupt_refused"])


@pytest.mark.slow
def test_bench_long_scores_windows_against_clips_one_by_one(checkpoint, tiny_corpus, server, tmp_path):
    out = tmp_path / "long.json"
    # The session server takes videos of up to 30 s: an 18-s upload, in windows.
    result = CliRunner().invoke(cli, ["bench", "long", "--checkpoint", str(checkpoint), "--data", str(tiny_corpus[0]),
                                      "--split", "train", "--clips", "2,4", "--window", "64,400", "--context", "0,16",
                                      "--repeats", "1", "--memory-minutes", "1", "--serve-requests", "2",
                                      "--serve-minutes", "0.3", "--url", server.http_url, "--json-out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    records = PreparedDataset(tiny_corpus[0]).records("train")
    rows = data["accuracy"]
    assert {(r["clips"], r["window"], r["context"]) for r in rows} == {
        (n, w, c) for n in (2, 4) for w in (64, 400) for c in (0, 16)}
    for row in rows:
        assert row["videos"] == len(records) // row["clips"]
        assert 0 <= row["boundary_repeats"] < row["videos"] * row["clips"]
        # The baseline does not depend on the windows: the same clips, recognised alone.
        assert row["wer_one_by_one"] == next(r["wer_one_by_one"] for r in rows if r["clips"] == row["clips"])
    assert data["speed"]["ratio"] > 0 and data["speed"]["long_clips"] == 4
    assert [round(m["minutes"]) for m in data["memory"]] == [0, 1]
    assert all(m["peak_mib"] > 0 and m["whole_decode_peak_mib"] > 0 for m in data["memory"])
    assert {(s["upload"], s["concurrency"]) for s in data["served"]} == {
        (u, c) for u in ("0.3-minute video", "clips alone") for c in (1, 4)}
    assert all(s["wrong"] == s["lost"] == s["failed"] == 0 for s in data["served"])
