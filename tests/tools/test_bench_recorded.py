"""`qslr bench recorded` end to end on the session server: a table and JSON of the kinds' WER through every front
end, beside the prepared clips."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from qslr.tools.cli import cli


@pytest.mark.slow
def test_bench_recorded_scores_every_front_end_beside_the_clips(checkpoint, tiny_corpus, server, tmp_path):
    out = tmp_path / "recorded.json"
    result = CliRunner().invoke(cli, ["bench", "recorded", "--checkpoint", str(checkpoint), "--data",
                                      str(tiny_corpus[0]), "--clips", "2", "--kinds", "phone", "--scale", "0.1",
                                      "--workers", "1", "--url", server.http_url, "--json-out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    rows = {row["kind"]: row for row in data["results"]}
    assert list(rows) == ["original", "phone"] and all(row["clips"] == 2 for row in rows.values())
    for row in rows.values():
        assert set(row["wer"]) == {"recognise", "server", "page"} and sum(row["refused"].values()) == 0
        # The page is the server's answer carried over HTTP: the same glosses.
        assert row["wer"]["page"] == row["wer"]["server"]
    assert "rotated 270 degrees" in rows["phone"]["framing"] and "placed on 25 fps" in rows["phone"]["framing"]
    assert "WER % of held-out clips" in result.output
    unknown = CliRunner().invoke(cli, ["bench", "recorded", "--checkpoint", str(checkpoint), "--kinds", "selfie"])
    assert unknown.exit_code == 2 and "unknown kinds selfie" in unknown.output
