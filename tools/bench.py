"""`qslr bench`: throughput of every stage against a baseline measured in the same run."""

from __future__ import annotations

import click

from tools.bench_data import bench_data
from tools.bench_decode import bench_decode
from tools.bench_infer import bench_infer
from tools.bench_score import bench_score
from tools.bench_serve import bench_serve
from tools.bench_train import bench_train
from tools.gpu_check import gpu_check


@click.group("bench")
def bench() -> None:
    """Benchmarks: each prints a table, writes JSON, and reports ratios against a baseline from the same run."""


bench.add_command(bench_data)
bench.add_command(bench_decode)
bench.add_command(bench_infer)
bench.add_command(bench_score)
bench.add_command(bench_serve)
bench.add_command(bench_train)
bench.add_command(gpu_check)
