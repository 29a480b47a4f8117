"""Figures drawn off-screen (matplotlib's Agg canvas, no display, no pyplot state) at an exact pixel size,
saved as PNG files that appear whole or not at all."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from qslr.pipelines.atomic_output import atomic_path


class PlotError(ValueError):
    """What a picture was to be drawn from is missing or unreadable; the message names the file."""


@dataclass(frozen=True)
class PictureSize:
    width: int  # pixels
    height: int
    dpi: int = 100  # sets the size of text and lines relative to the picture

    def __post_init__(self):
        if min(self.width, self.height, self.dpi) < 1:
            raise ValueError(f"picture size {self.width}x{self.height} at {self.dpi} dpi: every value must be positive")

    @classmethod
    def parse(cls, text: str, dpi: int = 100) -> PictureSize:
        """'1200x600' (pixels)."""
        match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
        if not match:
            raise ValueError(f"picture size {text!r}: expected WIDTHxHEIGHT in pixels, e.g. 1200x600")
        return cls(int(match[1]), int(match[2]), dpi)


def new_figure(size: PictureSize, **kwargs) -> Figure:
    figure = Figure(figsize=(size.width / size.dpi, size.height / size.dpi), dpi=size.dpi, **kwargs)
    FigureCanvasAgg(figure)
    return figure


def save_png(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        # The figure's own dpi and no tight bounding box, whatever a matplotlibrc says: the size asked for.
        figure.savefig(tmp, format="png", dpi=figure.dpi, bbox_inches=None)
    return path
