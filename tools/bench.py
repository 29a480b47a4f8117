"""`qslr bench`: throughput of every stage against a baseline measured in the same run."""

from __future__ import annotations

import click


@click.group("bench")
def bench() -> None:
    """Benchmarks of decoding, data loading, training, inference and serving (one per stage's issue)."""
