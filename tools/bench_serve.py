"""`qslr bench serve`: a bounded load on a real tritonserver, per video decoder, with and without dynamic
batching, and where the time goes (Triton's statistics per model against the same stages offline).

Every response is checked against the glosses the same server returned for that video when asked alone.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import click
import numpy as np
from click.core import ParameterSource
from rich.console import Console
from rich.table import Table

from qslr.deploy.decoder_choices import CLIP_DECODERS, PYAV
from qslr.deploy.served_limits import ServedLimits
from qslr.deploy.serving.client import CslrClient, RecognitionError
from qslr.deploy.serving.triton_repository import RepositorySettings, build_repository
from qslr.pipelines.prepared import PreparedDataset
from qslr.pipelines.video_io import read_video
from qslr.tools.bench_models import checkpoint_or_quick_one
from qslr.tools.bench_target import URL_OPTION, served, still_ready
from qslr.tools.benchmark_report import Rate, report
from qslr.tools.damaged_videos import container_variants, mutant_pool
from qslr.tools.serve_breakdown import (
    ENSEMBLE,
    STAGES,
    StageTime,
    offline_decoding,
    offline_stages,
    settled_snapshot,
    shares,
    stage_times,
)
from qslr.train.checkpointing import load_trained


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


@dataclass(frozen=True)
class BrokenUpload:
    kind: str
    data: bytes
    must_refuse: bool  # nothing valid can be read from it; a damaged but readable video may be answered


def corrupt_uploads(video: bytes, seed: int = 0) -> list[BrokenUpload]:
    """Broken uploads of several kinds, made from one good video."""
    rng = np.random.default_rng(seed)
    flipped = bytearray(video)
    for position in rng.choice(np.arange(len(video) // 4, len(video)), size=max(1, len(video) // 100),
                               replace=False):
        flipped[position] ^= 0xFF
    kinds = {"random bytes": rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(),
             "text": b"this is not a video\n" * 64, "empty": b"", "header alone": video[:64],
             "truncated to a seventh": video[: len(video) // 7], "truncated to a half": video[: len(video) // 2]}
    # Bit flips may leave a decodable video: answering it is no fault.
    return [*(BrokenUpload(kind, data, must_refuse=True) for kind, data in kinds.items()),
            BrokenUpload("bit flips", bytes(flipped), must_refuse=False)]


def fuzzed_uploads(video: bytes, seed: int = 0) -> list[BrokenUpload]:
    """``corrupt_uploads`` and seeded mutants of ``video`` and of its frames in other containers
    (qslr.tools.damaged_videos), which a server may answer where enough of them is readable."""
    frames, _ = read_video(video)
    pool = mutant_pool({"webm": video, **container_variants(frames[:48])}, seed)
    return [*corrupt_uploads(video, seed), *(BrokenUpload(m.kind, m.data, must_refuse=False) for m in pool)]


def is_corrupt(index: int, share: float) -> bool:
    """Spreads ``share`` of the requests evenly over the run."""
    return int((index + 1) * share) > int(index * share)


def load_run(url: str, videos: list[bytes], expected: list[list[str]], concurrency: int, requests: int,
             timeout: float, corrupt_share: float = 0.0, broken: list[BrokenUpload] | None = None) -> dict:
    """``requests`` recognitions from ``concurrency`` clients, ``corrupt_share`` of them broken uploads (by default
    ``corrupt_uploads`` of the first video). Valid requests are counted as answered right, ``wrong``, ``failed``
    (refused by the server: a bad batch-mate's failure reaching them) or ``lost`` (no answer at all); broken ones as
    refused or answered, by kind, and ``corrupt_accepted`` counts the answers to uploads that must be refused."""
    latencies: list[float] = []
    counts = {"valid": 0, "wrong": 0, "failed": 0, "lost": 0}
    refused: dict[str, int] = {}
    accepted: dict[str, int] = {}
    broken = broken if broken is not None else corrupt_uploads(videos[0])
    must_refuse = {upload.kind for upload in broken if upload.must_refuse}
    lock = threading.Lock()
    local = threading.local()
    clients: list[CslrClient] = []

    def one(index: int) -> None:
        if not hasattr(local, "client"):
            local.client = CslrClient(url, timeout=timeout)
            with lock:
                clients.append(local.client)
        if is_corrupt(index, corrupt_share):
            upload = broken[(int((index + 1) * corrupt_share) - 1) % len(broken)]  # each kind in turn
            try:
                local.client.recognise_bytes(upload.data)
                tally = accepted
            except RecognitionError:
                tally = refused
            with lock:
                tally[upload.kind] = tally.get(upload.kind, 0) + 1
            return
        start = time.perf_counter()
        try:
            result = local.client.recognise_bytes(videos[index % len(videos)])
            outcome = "right" if result.glosses == expected[index % len(videos)] else "wrong"
        except RecognitionError as exc:
            outcome = "lost" if exc.status is None else "failed"
        elapsed = time.perf_counter() - start
        with lock:
            counts["valid"] += 1
            if outcome in ("right", "wrong"):  # a request without an answer is no throughput and has no latency
                latencies.append(elapsed)
            if outcome != "right":
                counts[outcome] += 1

    started = time.perf_counter()
    try:
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, range(requests)))
    finally:
        for client in clients:
            client.close()
    wall = time.perf_counter() - started
    return {"throughput": len(latencies) / wall, "p50_ms": 1000 * percentile(latencies, 0.5),
            "p90_ms": 1000 * percentile(latencies, 0.9), "p99_ms": 1000 * percentile(latencies, 0.99), **counts,
            "corrupt_refused": refused, "corrupt_answered": accepted,
            "corrupt_accepted": sum(n for kind, n in accepted.items() if kind in must_refuse), "wall_s": wall}


def valid_failures(result: dict) -> int:
    return result["wrong"] + result["failed"] + result["lost"]


BASELINE = (PYAV, False, False)  # the server before the DALI decoder, the batching settings and INT8


def _int8_graph(checkpoint: Path, data: Path, folder: Path) -> Path:
    from qslr.deploy.export import int8_export

    spec = load_trained(checkpoint).input
    clips = int8_export.calibration_set(data, 16, spec.height, spec.width)
    return int8_export.export_int8(checkpoint, folder / "visual.int8.onnx", spec.height, spec.width, clips).path


def _configuration_name(decoder: str, batching: bool, int8: bool = False) -> str:
    return f"{decoder}, {'dynamic batching' if batching else 'no batching'}" + (", int8" if int8 else "")


def _breakdown_table(breakdown: dict[str, dict], offline: dict[str, dict[str, float]]) -> Table:
    table = Table(title="Per request: queue + compute ms of each stage (Triton's statistics) against offline")
    for column in ("configuration", "level", *(f"{s} q+c" for s in STAGES), "request", "batch (pre/vis/dec)"):
        table.add_column(column, justify="left" if column == "configuration" else "right")
    for name, levels in breakdown.items():
        decoder = name.split(",")[0]
        if decoder in offline:  # a server at --url has no repository here to run offline
            table.add_row(f"{name} (offline)", "-", *(f"{offline[decoder][s]:.1f}" for s in STAGES),
                          f"{sum(offline[decoder].values()):.1f}", "1/1/1")
        for level, times in levels.items():
            table.add_row(name, f"c{level}", *(f"{times[s].queue_ms:.1f}+{times[s].compute_ms:.1f}" for s in STAGES),
                          f"{times[ENSEMBLE].compute_ms:.1f}",
                          "/".join(f"{times[s].mean_batch:.1f}" for s in STAGES))
    return table


def _decoding_table(decoding: dict[str, float]) -> Table:
    table = Table(title="Video decoding offline, same videos, passes alternating (median ms per clip)")
    for column in ("decoder", "ms per clip", "x pyav, one at a time"):
        table.add_column(column, justify="left" if column == "decoder" else "right")
    reference = decoding["pyav, one at a time"]
    for name, ms in decoding.items():
        table.add_row(name, f"{ms:.1f}", f"{reference / ms:.2f}")
    return table


@click.command("serve")
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="[default: the demo's best.pt, else a quickly trained one]")
@click.option("--concurrency", "levels", type=int, multiple=True, default=(1, 4, 16), show_default=True)
@click.option("--requests", type=int, default=96, show_default=True, help="Requests per concurrency level.")
@click.option("--videos", "video_count", type=int, default=16, show_default=True, help="Distinct test videos.")
@click.option("--decoder", "decoders", type=click.Choice(CLIP_DECODERS), multiple=True, default=CLIP_DECODERS,
              show_default=True, help="Video decoders of `preprocess` to compare (pyav unbatched is the baseline).")
@click.option("--max-queue-delay-us", type=int, default=RepositorySettings.max_queue_delay_us, show_default=True)
@click.option("--timeout", type=float, default=120.0, show_default=True, help="Per request, seconds.")
@click.option("--corrupt-share", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Share of requests replaced by broken uploads (random bytes, text, truncated, bit flips...).")
@click.option("--int8", is_flag=True,
              help="Also serve the INT8 graph (`qslr export onnx --int8`, calibrated on 16 training clips) with the "
                   "last --decoder and dynamic batching, against the same server in float32.")
@URL_OPTION
@click.option("--json-out", type=click.Path(dir_okay=False, path_type=Path), default=Path("bench-results/serve.json"),
              show_default=True)
def bench_serve(checkpoint: Path | None, levels: tuple[int, ...], requests: int, video_count: int,
                decoders: tuple[str, ...], max_queue_delay_us: int, timeout: float, corrupt_share: float,
                int8: bool, url: str | None, json_out: Path) -> None:
    """Throughput, latency and per-stage time of the `cslr` ensemble: video decoders, with and without dynamic
    batching, against the same stages run offline (--url: the server running there, as it is)."""
    import tritonclient.http  # noqa: F401 - here, so that a missing client fails before a model is trained

    chosen = click.get_current_context().get_parameter_source("decoders") == ParameterSource.COMMANDLINE
    if url is not None and (int8 or chosen):
        raise click.UsageError("--url loads the server running there as it is: --decoder and --int8 choose the "
                               "servers to build")
    configurations = _configurations(decoders, int8) if url is None else []
    runs: dict[str, _LoadRuns] = {}
    offline: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="qslr-bench-serve-") as tmp:
        checkpoint, root = checkpoint_or_quick_one(checkpoint, Path(tmp))
        dataset = PreparedDataset(root)
        videos = [dataset.video_path(r).read_bytes() for r in dataset.records("test")[:video_count]]
        spec = load_trained(checkpoint).input
        int8_graph = _int8_graph(checkpoint, root, Path(tmp)) if int8 else None
        for decoder, batching, quantised in configurations:
            name = _configuration_name(decoder, batching, quantised)
            repository = Path(tmp) / name.replace(", ", "-").replace(" ", "-")
            settings = RepositorySettings(dynamic_batching=batching, max_queue_delay_us=max_queue_delay_us,
                                          video_decoder=decoder, visual_graph=int8_graph if quantised else None)
            build_repository(checkpoint, repository, settings, spec.height, spec.width)
            if decoder not in offline:
                offline[decoder] = offline_stages(repository, videos, decoder)
            runs[name] = _serve_under_load(name, None, repository, videos, levels, requests, timeout, corrupt_share)
        if url is not None:
            runs[f"server at {url}"] = _serve_under_load(f"server at {url}", url, None, videos, levels, requests,
                                                          timeout, corrupt_share)
        decoding = offline_decoding(videos, list(dict.fromkeys((PYAV, *decoders))), spec.height, spec.width,
                                    ServedLimits())
    baseline = _configuration_name(*BASELINE) if url is None else f"server at {url}"
    rates = [Rate(f"{name} c{level}", [runs[name].results[level]["throughput"]],
                  runs[name].results[level]["throughput"] / runs[baseline].results[level]["throughput"])
             for level in levels for name in runs]
    int8_pair = (_configuration_name(decoders[-1], True, True), _configuration_name(decoders[-1], True)) if int8 \
        else None
    report("Serving the cslr ensemble (tritonserver, CPU, python backends)", "requests/s", rates,
           f"{baseline} (same concurrency)",
           {"levels": list(levels), "requests": requests, "videos": len(videos), "decoders": list(decoders),
            "max_queue_delay_us": max_queue_delay_us, "checkpoint": str(checkpoint), "corrupt_share": corrupt_share,
            "int8": int8, "url": url},
           json_out, notes=_notes(runs, levels, offline, decoding, int8_pair))
    Console(width=140).print(_breakdown_table({name: run.stages for name, run in runs.items()}, offline))
    Console(width=140).print(_decoding_table(decoding))
    _echo_latencies(runs, levels, corrupt_share)
    if any(valid_failures(run.results[level]) or run.results[level]["corrupt_accepted"]
           for run in runs.values() for level in levels):
        raise click.ClickException("under load, some valid requests failed, were lost or answered wrongly, or a "
                                   "corrupt upload was answered")


def _configurations(decoders: tuple[str, ...], int8: bool) -> list[tuple[str, bool, bool]]:
    """(decoder, dynamic batching, INT8) of each server to run: the baseline first, then each decoder without and
    with batching, and with --int8 the last decoder's batched server on the INT8 graph."""
    configurations = [BASELINE, *((d, b, False) for d in decoders for b in (False, True) if (d, b, False) != BASELINE)]
    if int8:  # against the same decoder with dynamic batching in float32
        configurations.append((decoders[-1], True, True))
    return configurations


@dataclass(frozen=True)
class _LoadRuns:
    """One configuration served: its answers to each video asked alone, and per concurrency level the load's
    result and where its time went (Triton's statistics per model)."""

    answers: list[list[str]]
    results: dict[int, dict]
    stages: dict[int, dict[str, StageTime]]


def _serve_under_load(name: str, url: str | None, repository: Path | None, videos: list[bytes],
                      levels: tuple[int, ...], requests: int, timeout: float, corrupt_share: float) -> _LoadRuns:
    """The server at ``url``, else a real server started on ``repository``: each video's answer alone, then
    ``requests`` at each concurrency level, each checked against it."""
    import tritonclient.http as http

    with served(url, lambda: repository) as address:
        with contextlib.closing(CslrClient(address, timeout=timeout)) as single:
            expected = [single.recognise_bytes(v).glosses for v in videos]
        runs = _LoadRuns(expected, {}, {})
        with contextlib.closing(http.InferenceServerClient(address)) as statistics_client:
            for level in levels:
                before = settled_snapshot(statistics_client)
                runs.results[level] = load_run(address, videos, expected, level, requests, timeout, corrupt_share)
                runs.stages[level] = stage_times(before, settled_snapshot(statistics_client))
        still_ready(address, f"the load on {name}")
    return runs


def _notes(runs: dict[str, _LoadRuns], levels: tuple[int, ...], offline: dict[str, dict[str, float]],
           decoding: dict[str, float], int8_pair: tuple[str, str] | None) -> dict:
    """The JSON report's details: each run's result and stage times, the offline stages, and (``int8_pair``: the
    INT8 server and its float32 reference) how INT8 compares."""
    notes = {f"{name} c{level}": {**run.results[level],
                                  "stages": {m: {**asdict(t), "mean_batch": t.mean_batch}
                                             for m, t in run.stages[level].items()},
                                  "shares": shares(run.stages[level])}
             for name, run in runs.items() for level in levels}
    notes["offline_ms_per_clip"] = offline
    if int8_pair:
        quantised, reference = (runs[name] for name in int8_pair)
        notes["int8_answers_equal_float32"] = sum(a == b for a, b in zip(quantised.answers, reference.answers,
                                                                         strict=True))
        notes["int8_over_float32"] = {f"c{level}": quantised.results[level]["throughput"] /
                                      reference.results[level]["throughput"] for level in levels}
    notes["offline_decoding_ms_per_clip"] = decoding
    return notes


def _echo_latencies(runs: dict[str, _LoadRuns], levels: tuple[int, ...], corrupt_share: float) -> None:
    for name, run in runs.items():
        for level in levels:
            value = run.results[level]
            click.echo(f"{name} c{level}: p50 {value['p50_ms']:.0f} ms, p90 {value['p90_ms']:.0f} ms, "
                       f"p99 {value['p99_ms']:.0f} ms, wrong {value['wrong']}, failed {value['failed']}, lost "
                       f"{value['lost']} of {value['valid']} valid" + (
                           f"; corrupt refused {value['corrupt_refused']}, answered {value['corrupt_answered']}"
                           if corrupt_share else ""))
