"""The picture of what a CSLR model does with one video: a strip of frames over time, beneath it, on the same
time axis, the CTC posteriors of the recognised glosses (the blank faint), and the recognised glosses as
labelled bars over the output steps each one spans.

Output step t stands for frames [t * stride, (t + 1) * stride) of the video; its posterior is drawn at the
middle of those frames. The axis is in seconds when the video states its frame rate, in frames otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from qslr.pipelines.prepared import BLANK_ID
from qslr.train.plots.figure import PictureSize, new_figure
from qslr.train.plots.video_posteriors import VideoPosteriors

# Margins in figure fractions; the right one leaves room for the legend beside the posteriors.
_LEFT, _RIGHT, _BOTTOM, _TOP = 0.08, 0.86, 0.09, 0.90
_HEIGHTS = (1.3, 3.0, 0.8)  # frames, posteriors, segments


@dataclass
class PosteriorsFigure:
    figure: Figure
    frames: Axes
    posteriors: Axes
    segments: Axes
    thumbnails: list[int]  # the frame index shown in each slot of the strip, left to right
    colours: dict[int, str]  # gloss id -> the colour of its curve and its bars


def time_unit(result: VideoPosteriors) -> tuple[float, str]:
    """(frames per unit of the time axis, the axis label)."""
    return (result.fps, "time (s)") if result.fps > 0 else (1.0, "frame")


def draw_posteriors(result: VideoPosteriors, size: PictureSize, title: str = "") -> PosteriorsFigure:
    figure = new_figure(size)
    grid = figure.add_gridspec(3, 1, height_ratios=_HEIGHTS, hspace=0.08, left=_LEFT, right=_RIGHT,
                               bottom=_BOTTOM, top=_TOP)
    strip = figure.add_subplot(grid[0])
    curves = figure.add_subplot(grid[1], sharex=strip)
    bars = figure.add_subplot(grid[2], sharex=strip)
    per_unit, label = time_unit(result)
    steps = len(result.posteriors)
    covered = max(len(result.frames), steps * result.stride)  # the last step may reach past the last frame

    thumbnails = _draw_strip(strip, result.frames, covered, per_unit)
    colours = {gloss: f"C{i % 10}" for i, gloss in enumerate(result.recognised_ids)}
    centres = [(t + 0.5) * result.stride / per_unit for t in range(steps)]
    curves.plot(centres, result.posteriors[:, BLANK_ID], color="0.55", alpha=0.45, linewidth=1.0, label="blank")
    names = dict(zip(result.hypothesis.ids, result.hypothesis.glosses, strict=True))
    for gloss, colour in colours.items():
        curves.plot(centres, result.posteriors[:, gloss], color=colour, linewidth=1.6, label=names[gloss])
    curves.set_ylim(0, 1.03)
    curves.set_ylabel("posterior")
    curves.grid(True, alpha=0.3)
    curves.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    if not colours:
        curves.text(0.5, 0.5, "no gloss recognised", transform=curves.transAxes, ha="center", color="grey")

    for span in result.spans:
        left = span.start * result.stride / per_unit
        width = (span.end - span.start) * result.stride / per_unit
        bars.barh(0.5, width, left=left, height=0.8, color=colours[span.id], alpha=0.55)
        # Dark text, not clipped to the bar: a gloss of one output step is narrower than its name.
        bars.text(left + width / 2, 0.5, span.gloss, ha="center", va="center", fontsize="small", clip_on=True)
    bars.set_ylim(0, 1)
    bars.set_yticks([])
    bars.set_ylabel("glosses", rotation=0, ha="right", va="center")
    bars.set_xlabel(label)

    for axes in (strip, curves):
        axes.tick_params(labelbottom=False)
    strip.set_xlim(0, covered / per_unit)  # shared by all three
    if title:
        figure.suptitle(title)
    return PosteriorsFigure(figure, strip, curves, bars, thumbnails, colours)


def _draw_strip(axes: Axes, frames, covered: int, per_unit: float) -> list[int]:
    """Thumbnails tiling frames [0, covered), as many as fit at the frames' own aspect ratio, each the frame at
    the middle of its slot (past the video's end, its last frame: what the replicate padding shows the model);
    returns the frame index of each."""
    total, height, width = frames.shape[:3]
    box = axes.get_position()
    figure_width, figure_height = axes.figure.get_size_inches() * axes.figure.dpi
    slot_width = box.height * figure_height * width / height  # pixels, at the frames' aspect ratio
    count = max(1, min(total, round(box.width * figure_width / slot_width)))
    shown = []
    for slot in range(count):
        index = min(int((slot + 0.5) * covered / count), total - 1)
        start, end = slot * covered / count, (slot + 1) * covered / count
        axes.imshow(frames[index], extent=(start / per_unit, end / per_unit, 0, 1), aspect="auto",
                    interpolation="antialiased")
        shown.append(index)
    axes.set_ylim(0, 1)
    axes.set_yticks([])
    axes.set_ylabel("frames", rotation=0, ha="right", va="center")
    return shown
