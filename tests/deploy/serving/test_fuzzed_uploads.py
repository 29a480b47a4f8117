"""Damaged uploads through a real tritonserver and through `qslr recognise`: seeded mutants of WebM, MKV, MP4/H.264
and AVI files (bit flips at three densities, overwritten, deleted and cut byte ranges, damaged headers, another
container's header) and the mutants that once escaped, sent concurrently with valid uploads, 4 in 10 requests
corrupt, so that the server batches them together. Every valid request gets its own answer; every mutant an answer
or its own one-line refusal as a bad request (400), never a server error; the server stays ready."""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from click.testing import CliRunner

from qslr.deploy.serving.client import CslrClient, Recognition, RecognitionError
from qslr.tools.cli import cli
from qslr.tools.damaged_videos import mutant_pool

SEED = 2024


@pytest.fixture(scope="module")
def damaged(upload_variants, escaped_mutants) -> list[tuple[str, bytes]]:
    pool = [(m.kind, m.data) for m in mutant_pool(upload_variants, SEED)]
    return pool + [(f"escaped once: {p.name}", p.read_bytes()) for p in escaped_mutants]


def _batched(server, model: str) -> tuple[int, int]:
    import tritonclient.http as http

    with contextlib.closing(http.InferenceServerClient(server.http_url)) as client:
        stats = client.get_inference_statistics(model)["model_stats"][0]
    return int(stats["inference_count"]), int(stats["execution_count"])


@pytest.mark.timeout(300)
@pytest.mark.slow
def test_mutants_sent_with_valid_uploads_fail_alone_through_the_server(server, videos, damaged):
    valid = [Path(v).read_bytes() for v in videos[:4]]
    with contextlib.closing(CslrClient(server.http_url)) as alone:
        expected = [alone.recognise_bytes(v).glosses for v in valid]
    # 4 corrupt in 10: every mutant once, between 1.5 valid requests each.
    jobs = [("valid", i % len(valid), valid[i % len(valid)]) for i in range(len(damaged) * 3 // 2)]
    jobs += [("mutant", kind, data) for kind, data in damaged]
    jobs = [jobs[i] for i in sorted(range(len(jobs)), key=lambda i: (i * 7919) % len(jobs))]
    before = _batched(server, "preprocess")

    def send(job) -> Recognition | RecognitionError:
        with contextlib.closing(CslrClient(server.http_url, timeout=120)) as client:
            try:
                return client.recognise_bytes(job[2])
            except RecognitionError as exc:
                return exc

    with ThreadPoolExecutor(16) as pool:
        outcomes = list(pool.map(send, jobs))
    failures = []
    refused = 0
    for (what, which, _), outcome in zip(jobs, outcomes, strict=True):
        if what == "valid":
            if not isinstance(outcome, Recognition) or outcome.glosses != expected[which]:
                failures.append(f"valid upload {which}: {outcome}")
        elif isinstance(outcome, RecognitionError):
            refused += 1
            message = str(outcome)
            if outcome.status != "400" or "\n" in message or "preprocess: " not in message:
                failures.append(f"{which}: refused as {outcome.status}: {message}")
    assert not failures, failures
    assert refused >= len(damaged) // 3  # most mutants really were damaged, and refused
    inferences, executions = (after - first for after, first in zip(_batched(server, "preprocess"), before,
                                                                        strict=True))
    assert inferences > executions  # the mutants shared batches with the valid uploads
    assert server.ready()
    with contextlib.closing(CslrClient(server.http_url)) as after:
        assert after.recognise_bytes(valid[0]).glosses == expected[0]


@pytest.mark.timeout(300)
def test_mutants_given_to_qslr_recognise_are_refused_one_line_each(checkpoint, videos, damaged, tmp_path):
    files = []
    for index, (_, data) in enumerate(damaged):
        path = tmp_path / f"mutant{index:02d}.video"  # the decoder reads what the bytes are, not the name
        path.write_bytes(data)
        files.append(path)
    valid = [Path(v) for v in videos[:2]]
    alone = CliRunner().invoke(cli, ["recognise", "--checkpoint", str(checkpoint), "--json", *map(str, valid)])
    assert alone.exit_code == 0, alone.output
    mixed = [*files[: len(files) // 2], valid[0], *files[len(files) // 2:], valid[1]]
    result = CliRunner().invoke(cli, ["recognise", "--checkpoint", str(checkpoint), "--json", *map(str, mixed)])
    lines = result.output.strip().splitlines()
    answered = [line for line in lines if line.startswith("{")]
    refusals = [line for line in lines if not line.startswith("{")][:-1]  # the last line counts the failures
    assert result.exit_code == 1 and lines[-1] == f"{len(refusals)} of {len(mixed)} videos could not be recognised"
    # One line per refused mutant, each naming its own file; the valid videos answered as when given alone.
    assert sorted(line.split(": ")[0] for line in refusals) == sorted(
        {str(p) for p in files} - {line.split('"video": "')[1].split('"')[0] for line in answered})
    for want in alone.output.strip().splitlines():
        assert want in answered
    assert len(refusals) >= len(damaged) // 3
