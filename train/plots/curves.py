"""A run's training curves from its metrics.csv: the losses (total and each term), the dev WER of both
branches, and the learning rate, one panel each, over optimiser steps.

Columns a run did not log (a metrics file written before the loss terms were, a term the preset does not
use) are left out of the picture, not drawn as zeros.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from qslr.train.metrics_log import read_metrics
from qslr.train.plots.figure import PictureSize, PlotError, new_figure

# (metrics.csv column, legend label): what each panel draws, in drawing order.
LOSSES = (("train_loss", "total (weighted)"), ("loss_SeqCTC", "SeqCTC"), ("loss_ConvCTC", "ConvCTC"),
          ("loss_Dist", "Dist"))
WERS = (("dev_wer", "BiLSTM (SeqCTC)"), ("dev_wer_conv", "conv (ConvCTC)"))
LEARNING_RATE = (("lr", "learning rate"),)


@dataclass(frozen=True)
class Curve:
    column: str
    label: str
    steps: list[int]
    values: list[float]


@dataclass
class CurvesFigure:
    figure: Figure
    losses: Axes
    wer: Axes
    lr: Axes


def read_curves(run_dir: str | Path) -> dict[str, Curve]:
    """Every drawable column of RUN_DIR/metrics.csv that holds at least one value, by column name."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise PlotError(f"{run_dir}: no such run folder")
    path = run_dir / "metrics.csv"
    if not path.is_file():
        raise PlotError(f"{path}: not found ({run_dir} is not the work_dir of a training run, or it has not "
                        f"finished an epoch yet)")
    rows = read_metrics(path)
    if not rows:
        raise PlotError(f"{path}: holds no epochs yet")
    if "global_step" not in rows[0]:
        raise PlotError(f"{path}: has no global_step column (not a QSLR metrics file?)")
    points: dict[str, tuple[list[int], list[float]]] = {}
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        step = _number(path, line, row, "global_step")
        for column, _ in (*LOSSES, *WERS, *LEARNING_RATE):
            value = _number(path, line, row, column)
            if value is not None:
                steps, values = points.setdefault(column, ([], []))
                steps.append(int(step))
                values.append(value)
    labels = dict((*LOSSES, *WERS, *LEARNING_RATE))
    return {column: Curve(column, labels[column], steps, values) for column, (steps, values) in points.items()}


def _number(path: Path, line: int, row: dict[str, str | None], column: str) -> float | None:
    text = row.get(column)
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        raise PlotError(f"{path}:{line}: {column} {text!r} is not a number") from None
    if column == "global_step" and not value.is_integer():
        raise PlotError(f"{path}:{line}: global_step {text!r} is not an integer")
    return value


def draw_curves(curves: dict[str, Curve], size: PictureSize, title: str = "") -> CurvesFigure:
    figure = new_figure(size, layout="constrained")
    losses, wer, lr = figure.subplots(1, 3, sharex=True)
    _panel(losses, curves, LOSSES, "training loss (per epoch)", log_scale=True)
    _panel(wer, curves, WERS, "dev WER (%)")
    _panel(lr, curves, LEARNING_RATE, "learning rate", log_scale=True, drawstyle="steps-pre")
    if wer.lines:
        wer.set_ylim(bottom=0)
        best = curves.get("dev_wer")
        if best:
            finite = [(v, s) for s, v in zip(best.steps, best.values, strict=True) if math.isfinite(v)]
            if finite:
                value, step = min(finite)
                wer.annotate(f"best {value:.2f} %", (step, value), textcoords="offset points", xytext=(0, 10),
                             ha="center", fontsize="small")
    if title:
        figure.suptitle(title)
    return CurvesFigure(figure, losses, wer, lr)


def _panel(axes: Axes, curves: dict[str, Curve], series: tuple[tuple[str, str], ...], title: str,
           log_scale: bool = False, drawstyle: str = "default") -> None:
    axes.set_title(title)
    axes.set_xlabel("step")
    axes.grid(True, alpha=0.3)
    drawn = [curves[column] for column, _ in series if column in curves]
    if not drawn:
        axes.text(0.5, 0.5, "not logged by this run", transform=axes.transAxes, ha="center", va="center",
                  color="grey")
        return
    for curve in drawn:
        # The weighted total is what the optimiser saw: drawn heavier than the terms it sums.
        width = 2.2 if curve.column == "train_loss" else 1.4
        axes.plot(curve.steps, curve.values, marker="o", markersize=3, linewidth=width, label=curve.label,
                  drawstyle=drawstyle)
    if log_scale and all(v > 0 for curve in drawn for v in curve.values if math.isfinite(v)):
        axes.set_yscale("log")
    if len(drawn) > 1:
        axes.legend(fontsize="small")


def plot_curves(run_dir: str | Path, size: PictureSize) -> CurvesFigure:
    """The curves of the run in RUN_DIR (its work_dir), titled with the folder's name."""
    return draw_curves(read_curves(run_dir), size, title=f"training run {Path(run_dir).resolve().name}")
