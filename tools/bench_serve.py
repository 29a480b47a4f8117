"""`qslr bench serve`: a bounded load on a real tritonserver, with and without dynamic batching.

Every response is checked against the glosses the same server returned for that video when asked alone.
"""

from __future__ import annotations

import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click
import numpy as np

from deploy.client import CslrClient, RecognitionError
from deploy.server import Ports, TritonServer, free_port
from deploy.triton_repository import RepositorySettings, build_repository
from pipelines.prepared import PreparedDataset
from tools.bench_models import checkpoint_or_quick_one
from tools.benchmark_report import Rate, report
from train.checkpointing import load_trained


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def corrupt_uploads(video: bytes, seed: int = 0) -> dict[str, bytes]:
    """Broken uploads of several kinds, made from one good video."""
    rng = np.random.default_rng(seed)
    flipped = bytearray(video)
    for position in rng.choice(np.arange(len(video) // 4, len(video)), size=max(1, len(video) // 100),
                               replace=False):
        flipped[position] ^= 0xFF
    return {"random bytes": rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(),
            "text": b"this is not a video\n" * 64, "empty": b"", "header alone": video[:64],
            "truncated to a seventh": video[: len(video) // 7], "truncated to a half": video[: len(video) // 2],
            "bit flips": bytes(flipped)}


def is_corrupt(index: int, share: float) -> bool:
    """Spreads ``share`` of the requests evenly over the run."""
    return int((index + 1) * share) > int(index * share)


def load_run(url: str, videos: list[bytes], expected: list[list[str]], concurrency: int, requests: int,
             timeout: float, corrupt_share: float = 0.0) -> dict:
    """``requests`` recognitions from ``concurrency`` clients; counts wrong and lost answers, and, among the
    ``corrupt_share`` of broken uploads mixed in, those refused (by kind) and those answered as if valid."""
    latencies: list[float] = []
    wrong = lost = 0
    refused: dict[str, int] = {}
    accepted: dict[str, int] = {}
    broken = list(corrupt_uploads(videos[0]).items())
    lock = threading.Lock()
    local = threading.local()

    def one(index: int) -> None:
        nonlocal wrong, lost
        if not hasattr(local, "client"):
            local.client = CslrClient(url, timeout=timeout)
        if is_corrupt(index, corrupt_share):
            kind, data = broken[index % len(broken)]
            try:
                local.client.recognise_bytes(data)
                tally = accepted
            except RecognitionError:
                tally = refused
            with lock:
                tally[kind] = tally.get(kind, 0) + 1
            return
        start = time.perf_counter()
        try:
            result = local.client.recognise_bytes(videos[index % len(videos)])
            ok = result.glosses == expected[index % len(videos)]
        except RecognitionError:
            ok = None
        elapsed = time.perf_counter() - start
        with lock:
            latencies.append(elapsed)
            wrong += ok is False
            lost += ok is None

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(requests)))
    wall = time.perf_counter() - started
    return {"throughput": len(latencies) / wall, "p50_ms": 1000 * percentile(latencies, 0.5),
            "p90_ms": 1000 * percentile(latencies, 0.9), "p99_ms": 1000 * percentile(latencies, 0.99),
            "wrong": wrong, "lost": lost, "valid": len(latencies), "corrupt_refused": refused,
            "corrupt_accepted": accepted}


@click.command("serve")
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="[default: the demo's best.pt, else a quickly trained one]")
@click.option("--concurrency", "levels", type=int, multiple=True, default=(1, 4, 16, 64), show_default=True)
@click.option("--requests", type=int, default=96, show_default=True, help="Requests per concurrency level.")
@click.option("--videos", "video_count", type=int, default=16, show_default=True, help="Distinct test videos.")
@click.option("--max-queue-delay-us", type=int, default=20000, show_default=True)
@click.option("--timeout", type=float, default=120.0, show_default=True, help="Per request, seconds.")
@click.option("--corrupt-share", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Share of requests replaced by broken uploads (random bytes, text, truncated, bit flips...).")
@click.option("--json-out", type=click.Path(dir_okay=False, path_type=Path), default=Path("bench-results/serve.json"),
              show_default=True)
def bench_serve(checkpoint: Path | None, levels: tuple[int, ...], requests: int, video_count: int,
                max_queue_delay_us: int, timeout: float, corrupt_share: float, json_out: Path) -> None:
    """Throughput and p50/p90/p99 latency of the `cslr` ensemble, dynamic batching against none."""
    results: dict[str, dict[int, dict]] = {}
    with tempfile.TemporaryDirectory(prefix="qslr-bench-serve-") as tmp:
        checkpoint, root = checkpoint_or_quick_one(checkpoint, Path(tmp))
        dataset = PreparedDataset(root)
        records = dataset.records("test")[:video_count]
        videos = [dataset.video_path(r).read_bytes() for r in records]
        spec = load_trained(checkpoint).input
        for batching in (False, True):
            name = "dynamic batching" if batching else "no batching"
            repository = Path(tmp) / ("batched" if batching else "unbatched")
            settings = RepositorySettings(dynamic_batching=batching, max_queue_delay_us=max_queue_delay_us)
            build_repository(checkpoint, repository, settings, spec.height, spec.width)
            with TritonServer(repository, Ports(free_port(), free_port(), free_port())) as server:
                single = CslrClient(server.http_url, timeout=timeout)
                expected = [single.recognise_bytes(v).glosses for v in videos]
                results[name] = {level: load_run(server.http_url, videos, expected, level, requests, timeout,
                                                 corrupt_share) for level in levels}
                if not server.ready():
                    raise click.ClickException(f"{name}: the server was not ready after the load")
                for level in levels:
                    results[name][level]["server_ready_after"] = True
    rates = []
    for level in levels:
        for name in ("no batching", "dynamic batching"):
            rates.append(Rate(f"{name} c{level}", [results[name][level]["throughput"]],
                              results[name][level]["throughput"] / results["no batching"][level]["throughput"]))
    notes = {f"{name} c{level}": results[name][level] for name in results for level in levels}
    report("Serving the cslr ensemble (tritonserver, CPU, python backends)", "requests/s", rates,
           "no batching (same concurrency)", {"levels": list(levels), "requests": requests, "videos": len(videos),
                                              "max_queue_delay_us": max_queue_delay_us, "checkpoint": str(checkpoint),
                                              "corrupt_share": corrupt_share},
           json_out, notes=notes)
    for key, value in notes.items():
        click.echo(f"{key}: p50 {value['p50_ms']:.0f} ms, p90 {value['p90_ms']:.0f} ms, p99 {value['p99_ms']:.0f} ms, "
                   f"wrong {value['wrong']}, lost {value['lost']} of {value['valid']} valid"
                   + (f"; corrupt refused {value['corrupt_refused']}, answered {value['corrupt_accepted']}"
                      if corrupt_share else ""))
    if any(v["wrong"] or v["lost"] for v in notes.values()):
        raise click.ClickException("some requests were lost or answered wrongly under load")
