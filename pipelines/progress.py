"""The progress display of every long command: items done of the total, their rate and the time left.

It is drawn on standard error, beside the logs, so that what a command prints on standard output (a table,
JSON) stays clean when piped; and only when standard error is a terminal, so that a log file, CI output or a
captured test run holds no redrawn lines.
"""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class RateColumn(ProgressColumn):
    """Items per second, or per minute when slower (the mean once finished)."""

    def __init__(self, unit: str):
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if speed is None:
            text = f"? {self.unit}/s"
        elif speed >= 1:
            text = f"{speed:,.0f} {self.unit}/s" if speed >= 100 else f"{speed:.3g} {self.unit}/s"
        else:  # training runs, say: 0.7 runs/min reads better than 0.0117 runs/s
            text = f"{60 * speed:.2g} {self.unit}/min"
        return Text(text, style="progress.data.speed")


def progress_bar(unit: str, *extra: ProgressColumn, enabled: bool = True, console: Console | None = None) -> Progress:
    """A Progress showing each task's description, done/total, ``unit``/s and the time left, then ``extra``
    columns; silent unless ``enabled`` and the console (standard error by default) is a terminal."""
    console = console or Console(stderr=True)
    # Rates over the last ten minutes rather than rich's half minute: a training run in a benchmark takes
    # minutes, and a rate needs two samples in the window (the 1,000 latest samples bound it for fast work).
    return Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    RateColumn(unit), TimeRemainingColumn(), *extra, console=console,
                    disable=not (enabled and console.is_terminal), transient=True, speed_estimate_period=600)


def counting(work: Callable[[], int], progress: Progress, task: TaskID) -> Callable[[], int]:
    """``work``, which returns how many items it processed, advancing ``task`` by as many after each call."""
    def counted() -> int:
        items = work()
        progress.advance(task, items)
        return items
    return counted
