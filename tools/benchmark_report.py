"""Shared measuring and reporting for `qslr bench`: repeated timings, medians, ratios, a table and JSON."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from qslr.pipelines.atomic_output import write_text_atomic


@dataclass
class Rate:
    """Items per second of one contender over several repeats."""

    name: str
    per_second: list[float]
    ratio: float | None = None  # median against the baseline's median, same run

    @property
    def median(self) -> float:
        return statistics.median(self.per_second)


def measure(work: Callable[[], int], repeats: int, warmup: int = 1) -> list[float]:
    """Run ``work`` (returning how many items it processed) ``warmup + repeats`` times; items/s per repeat."""
    for _ in range(warmup):
        work()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        items = work()
        rates.append(items / (time.perf_counter() - start))
    return rates


def with_ratios(rates: Sequence[Rate], baseline: str) -> list[Rate]:
    reference = next(r for r in rates if r.name == baseline).median
    for rate in rates:
        rate.ratio = rate.median / reference
    return list(rates)


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]], width: int = 120) -> None:
    """A table of text cells, the first column left-aligned and the figures after it right-aligned."""
    table = Table(title=title)
    for index, column in enumerate(columns):
        table.add_column(column, justify="left" if index == 0 else "right")
    for row in rows:
        table.add_row(*row)
    Console(width=width).print(table)


def environment() -> dict:
    import torch

    return {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def report(title: str, unit: str, rates: Sequence[Rate], baseline: str, settings: dict, json_path: Path | None,
           notes: dict | None = None) -> dict:
    """Print the table and write the JSON; returns the JSON payload."""
    table = Table(title=title)
    for column in ("contender", f"median {unit}", "min", "max", f"x {baseline}"):
        table.add_column(column, justify="left" if column == "contender" else "right")
    for rate in rates:
        table.add_row(rate.name, f"{rate.median:,.1f}", f"{min(rate.per_second):,.1f}", f"{max(rate.per_second):,.1f}",
                      f"{rate.ratio:.2f}" if rate.ratio is not None else "-")
    Console(width=110).print(table)
    payload = {"title": title, "unit": unit, "baseline": baseline, "settings": settings, "environment": environment(),
               "results": [{**asdict(r), "median": r.median} for r in rates], **({"notes": notes} if notes else {})}
    if json_path is not None:
        write_text_atomic(json_path, json.dumps(payload, indent=1) + "\n")
    return payload
