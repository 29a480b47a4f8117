"""The repository as users vary it, served by a real tritonserver: a visual model whose batch limit is below the
served batch, and two instances of preprocess, visual and ctc_decoder (the INT8 graph it serves is checked against
`qslr recognise --onnx` in test_int8_export)."""

from __future__ import annotations

import contextlib
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import tritonclient.http as http
from click.testing import CliRunner
from served_settings import VARIANT_BATCH, VARIANT_INSTANCES, VARIANT_VISUAL_BATCH

from qslr.deploy.serving import processes
from qslr.deploy.serving.client import CslrClient
from qslr.deploy.serving.repository_checks import read_config
from qslr.tools.cli import cli


def _statistics(server, model: str) -> tuple[int, int]:
    """(requests answered, executions) of ``model`` so far."""
    stats = http.InferenceServerClient(server.http_url).get_inference_statistics(model)["model_stats"][0]
    return int(stats["inference_count"]), int(stats["execution_count"])


def _local_answers(graph: Path, videos: list[Path]) -> dict[Path, tuple[list[str], list[float]]]:
    result = CliRunner().invoke(cli, ["recognise", "--onnx", str(graph), "--json", *map(str, videos)])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    return {video: ([g["gloss"] for g in r["glosses"]], [g["start"] for g in r["glosses"]])
            for video, r in zip(videos, records, strict=True)}


def test_the_models_run_in_the_instances_and_batches_asked_for(variant_repository, variant_server):
    batches = {name: read_config(variant_repository / name / "config.pbtxt").max_batch_size
               for name in ("preprocess", "visual", "ctc_decoder", "cslr_clip", "cslr", "cslr_frames")}
    assert batches == {"preprocess": VARIANT_BATCH, "visual": VARIANT_VISUAL_BATCH, "ctc_decoder": VARIANT_BATCH,
                       "cslr_clip": VARIANT_VISUAL_BATCH, "cslr": VARIANT_VISUAL_BATCH,
                       "cslr_frames": VARIANT_VISUAL_BATCH}
    stubs = list(processes.python_stubs(variant_server.process.pid).values())
    for model in ("preprocess", "visual", "ctc_decoder"):
        assert stubs.count(model) == VARIANT_INSTANCES, stubs


@pytest.mark.timeout(300)
def test_concurrent_requests_are_answered_as_one_at_a_time_across_instances_and_small_visual_batches(
        int8_graph, variant_server, videos):
    expected = _local_answers(int8_graph, videos)
    before = {model: _statistics(variant_server, model) for model in ("visual", "ctc_decoder")}
    jobs = [videos[i % len(videos)] for i in range(24)]

    def recognise(video: Path):
        with contextlib.closing(CslrClient(variant_server.http_url)) as client:
            return client.recognise_file(video)

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(recognise, jobs))
    for video, answer in zip(jobs, answers, strict=True):
        glosses, starts = expected[video]
        assert answer.glosses == glosses and answer.start_s == pytest.approx(starts, abs=1e-3), video
    requests, executions = (after - start for after, start in zip(_statistics(variant_server, "visual"),
                                                                    before["visual"], strict=True))
    # Every clip went through the visual model, never more than its limit of clips at once.
    assert requests == len(jobs) and executions * VARIANT_VISUAL_BATCH >= requests
