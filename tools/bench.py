"""`qslr bench`: throughput of every stage against a baseline measured in the same run."""

from __future__ import annotations

import click

from qslr.tools.lazy_group import LazyCommand, LazyGroup

BENCHMARKS = {
    "corrupt": LazyCommand("qslr.tools.bench_corrupt:bench_corrupt",
        "Lost / wrong / batch-mates failed / corrupt accepted under load with..."),
    "data": LazyCommand("qslr.tools.bench_data:bench_data",
        "DALI against the reference loader on the same dataset, plans and..."),
    "decode": LazyCommand("qslr.tools.bench_decode:bench_decode",
        "Decodes/s on one CPU core, all contenders on the same..."),
    "infer": LazyCommand("qslr.tools.bench_infer:bench_infer",
        "Served signature (uint8 frames -> log-probabilities) at several batch..."),
    "long": LazyCommand("qslr.tools.bench_long:bench_long",
        "Long videos in windows against their clips one by one: WER, gloss..."),
    "live": LazyCommand("qslr.tools.bench_live:bench_live",
        "Live streams in real time, locally and through a server: latency per..."),
    "recorded": LazyCommand("qslr.tools.bench_recorded:bench_recorded",
        "Clips recorded as phones and webcams store them: WER through..."),
    "score": LazyCommand("qslr.tools.bench_score:bench_score",
        "Splits scored per second (normalisation, [EMPTY] filling, alignment)..."),
    "serve": LazyCommand("qslr.tools.bench_serve:bench_serve",
        "Throughput, latency and per-stage time of the `cslr` ensemble: video..."),
    "train": LazyCommand("qslr.tools.bench_train:bench_train",
        "Per-process training throughput of the `synthetic` preset (OVERRIDES..."),
    "gpu-check": LazyCommand("qslr.tools.gpu_check:gpu_check",
        "Prove every GPU path this machine can run; writes one JSON report and..."),
}


@click.group("bench", cls=LazyGroup, lazy=BENCHMARKS)
def bench() -> None:
    """Benchmarks: each prints a table, writes JSON, and reports ratios against a baseline from the same run."""
