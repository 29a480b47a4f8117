"""The progress display: done/total, rate and time left on a terminal; nothing anywhere else."""

from __future__ import annotations

import io
import re
import time

from rich.console import Console

from qslr.pipelines.progress import RateColumn, counting, progress_bar


def terminal() -> Console:
    return Console(file=io.StringIO(), force_terminal=True, width=120, color_system=None)


def test_silent_when_not_on_a_terminal():
    not_a_terminal = Console(file=io.StringIO(), width=120)
    for bar in (progress_bar("videos", console=not_a_terminal), progress_bar("videos", console=terminal(),
                                                                              enabled=False)):
        with bar:
            bar.advance(bar.add_task("rendering", total=3), 3)
        assert bar.disable
        assert bar.console.file.getvalue() == ""


def test_drawn_on_standard_error():
    assert progress_bar("videos").console.stderr


def test_a_terminal_shows_done_of_total_the_rate_and_the_time_left():
    bar = progress_bar("videos", console=terminal())
    with bar:
        task = bar.add_task("rendering", total=10)
        for _ in range(4):
            time.sleep(0.02)
            bar.advance(task)
        bar.refresh()
        shown = bar.console.file.getvalue().split("\r")[-1]
    rate = re.search(r"rendering .* 4/10 ([0-9.]+) videos/s (\d+:\d\d:\d\d)", shown)
    assert rate, shown
    assert 0 < float(rate.group(1)) <= 4 / 0.02 * 1.5  # no faster than the sleeps allow


def test_slow_work_has_a_rate_per_minute():
    now = [0.0]
    bar = progress_bar("runs", console=terminal())
    bar.get_time = lambda: now[0]  # a run every two minutes
    task = bar.add_task("training", total=4)
    for _ in range(3):
        now[0] += 120.0
        bar.advance(task)
    rate = next(column for column in bar.columns if isinstance(column, RateColumn))
    assert rate.render(bar.tasks[task]).plain == "0.5 runs/min"


def test_counting_advances_by_what_the_work_reports():
    bar = progress_bar("clips", console=terminal())
    task = bar.add_task("inferring", total=12)
    work = counting(lambda: 4, bar, task)
    assert [work(), work()] == [4, 4]
    assert bar.tasks[task].completed == 8
