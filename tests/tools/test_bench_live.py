"""`qslr bench live` on the tiny corpus's own streams: every measurement comes back, the live answer of a stream is
the offline answer of its frames (WER 0 against it), nothing is dropped at real time, and the decoding work of a
whole stream is reported for its first and last minute."""

from __future__ import annotations

import dataclasses
import json

import pytest
from click.testing import CliRunner

from qslr.pipelines.synthetic.generator import generate_corpus
from qslr.tools.cli import cli


@pytest.mark.slow
def test_bench_live_measures_streams_sent_in_real_time(checkpoint, tiny_spec, tmp_path):
    corpus = tmp_path / "corpus"
    generate_corpus(dataclasses.replace(tiny_spec, streams=2, stream_sentences=3), corpus, workers=2,
                    show_progress=False)
    out = tmp_path / "live.json"
    result = CliRunner().invoke(cli, ["bench", "live", "--checkpoint", str(checkpoint), "--streams",
                                      str(corpus / "streams"), "--data", str(corpus), "--concurrency", "1",
                                      "--concurrency", "2", "--seconds", "4", "--window", "32", "--context", "8",
                                      "--sweep", "32/8,48/8", "--no-serve", "--json-out", str(out)])
    assert result.exit_code == 0, result.output
    payload = json.loads(out.read_text())
    rows = payload["results"]
    assert [(r["target"], r["streams"]) for r in rows] == [("local", 1), ("local", 2)]
    for row in rows + payload["sweep"]:
        assert row["glosses"] >= 2 and row["dropped"] == 0 and row["wer_against_offline"] == 0.0
        assert 0 < row["real_time_factor"] < 1 and row["final_p50_s"] is not None
        assert row["final_p95_s"] >= row["final_p50_s"] and row["memory_mib_per_stream"] >= 0
    assert [r["window"] for r in payload["sweep"]] == ["32/8", "48/8"]
    work = payload["decoding_work"]
    assert work["updates"] >= 3 and work["first_minute"]["steps_max"] >= 1
    assert "Live streams of 4 s sent in real time, windows 32/8" in result.output


def test_bench_live_takes_a_checkpoint_or_a_graph_without_a_server(checkpoint, tmp_path):
    streams = tmp_path / "streams"
    streams.mkdir()
    for models in ([], ["--checkpoint", str(checkpoint), "--onnx", str(checkpoint)], ["--onnx", str(checkpoint)]):
        result = CliRunner().invoke(cli, ["bench", "live", *models, "--streams", str(streams), "--data",
                                          str(tmp_path)])
        assert result.exit_code == 2 and "give --checkpoint, or --onnx with --no-serve" in result.output
