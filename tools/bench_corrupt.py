"""`qslr bench corrupt`: the shipped repository under a long load with broken uploads mixed in (unreadable files,
cut files, seeded mutants of several containers), counting what must stay zero: valid requests lost, answered
wrongly or failed by a broken batch-mate, and broken uploads answered as if valid; the valid request rate
against a run without broken uploads."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from qslr.deploy.decoder_choices import CLIP_DECODERS
from qslr.deploy.serving.client import CslrClient
from qslr.deploy.serving.triton_repository import RepositorySettings, build_repository, resolve_video_decoder
from qslr.pipelines.prepared import PreparedDataset
from qslr.tools.bench_models import checkpoint_or_quick_one
from qslr.tools.bench_serve import fuzzed_uploads, load_run, valid_failures
from qslr.tools.bench_target import URL_OPTION, served, still_ready
from qslr.tools.benchmark_report import Rate, report
from qslr.train.checkpointing import load_trained


def _counts_table(results: dict[float, dict]) -> Table:
    table = Table(title="Valid and broken requests under load")
    for column in ("broken share", "valid", "lost", "wrong", "batch-mates failed", "broken", "corrupt accepted",
                   "damaged answered", "valid req/s", "p50 ms", "p99 ms"):
        table.add_column(column, justify="right")
    for share, run in results.items():
        broken = sum(run["corrupt_refused"].values()) + sum(run["corrupt_answered"].values())
        table.add_row(f"{share:.0%}", str(run["valid"]), str(run["lost"]), str(run["wrong"]), str(run["failed"]),
                      str(broken), str(run["corrupt_accepted"]),
                      str(sum(run["corrupt_answered"].values()) - run["corrupt_accepted"]),
                      f"{run['throughput']:.1f}", f"{run['p50_ms']:.0f}", f"{run['p99_ms']:.0f}")
    return table


@click.command("corrupt")
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Default: a quick model trained on a small synthetic corpus.")
@click.option("--requests", type=int, default=10_000, show_default=True, help="Requests per run.")
@click.option("--concurrency", type=int, default=64, show_default=True)
@click.option("--share", "shares", type=click.FloatRange(0, 1, min_open=True), multiple=True, default=(0.05, 0.30),
              show_default=True, help="Shares of broken uploads, one run each (a run without any is the baseline).")
@click.option("--videos", "video_count", type=int, default=16, show_default=True, help="Distinct valid test videos.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the mutants.")
@click.option("--decoder", type=click.Choice(CLIP_DECODERS), default=None,
              help="The preprocess model's video decoder [default: as `qslr triton build` chooses].")
@click.option("--timeout", type=float, default=300.0, show_default=True, help="Per request, seconds.")
@URL_OPTION
@click.option("--json-out", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("bench-results/corrupt.json"), show_default=True)
def bench_corrupt(checkpoint: Path | None, requests: int, concurrency: int, shares: tuple[float, ...],
                  video_count: int, seed: int, decoder: str | None, timeout: float, url: str | None,
                  json_out: Path) -> None:
    """Lost / wrong / batch-mates failed / corrupt accepted under load with broken uploads; goal 0 / 0 / 0 / 0."""
    with tempfile.TemporaryDirectory(prefix="qslr-bench-corrupt-") as tmp:
        checkpoint, root = checkpoint_or_quick_one(checkpoint, Path(tmp))
        dataset = PreparedDataset(root)
        videos = [dataset.video_path(r).read_bytes() for r in dataset.records("test")[:video_count]]
        broken = fuzzed_uploads(videos[0], seed)
        settings = RepositorySettings(video_decoder=resolve_video_decoder(decoder))

        def repository() -> Path:
            spec = load_trained(checkpoint).input
            return build_repository(checkpoint, Path(tmp) / "repository", settings, spec.height, spec.width)

        results: dict[float, dict] = {}
        with served(url, repository) as address:
            with contextlib.closing(CslrClient(address, timeout=timeout)) as single:
                expected = [single.recognise_bytes(v).glosses for v in videos]
            for share in (0.0, *shares):
                results[share] = load_run(address, videos, expected, concurrency, requests, timeout, share, broken)
                still_ready(address, f"the run with {share:.0%} broken")
    rates = [Rate(f"{share:.0%} broken", [run["throughput"]], run["throughput"] / results[0.0]["throughput"])
             for share, run in results.items()]
    report("Valid requests/s with broken uploads mixed in (tritonserver, CPU)", "valid requests/s", rates,
           "0% broken (same run)",
           {"requests": requests, "concurrency": concurrency, "shares": list(shares), "videos": len(videos),
            "broken_kinds": len(broken), "seed": seed,
            "decoder": settings.video_decoder if url is None else f"that of the server at {url}",
            "checkpoint": str(checkpoint), "url": url},
           json_out, notes={f"{share:.0%} broken": run for share, run in results.items()})
    Console(width=160).print(_counts_table(results))
    if any(valid_failures(run) or run["corrupt_accepted"] for run in results.values()):
        raise click.ClickException("under load, some valid requests failed, were lost or answered wrongly, or a "
                                   "corrupt upload was answered")
