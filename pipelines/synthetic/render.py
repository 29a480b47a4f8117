"""Anti-aliased rendering of a signer, frame by frame, with numpy.

Shapes are drawn from signed distance fields inside their bounding boxes, so a frame costs a few
hundred microseconds at the corpus' default size and the same drawing scales to any resolution.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from qslr.pipelines.synthetic.choreography import Choreography, HandTrack
from qslr.pipelines.synthetic.signers import SignerLook
from qslr.pipelines.synthetic.vocabulary import HANDSHAPES

Colour = tuple[float, float, float]


@dataclass(frozen=True)
class Shape:
    """A signed distance field in pixels (negative inside) and the pixel box it can cover."""

    bounds: tuple[float, float, float, float]  # x0, y0, x1, y1
    distance: Callable[[np.ndarray, np.ndarray], np.ndarray]


class Canvas:
    """An RGB float image in [0, 1] and a mapping from canonical units to its pixels."""

    def __init__(self, image: np.ndarray, offset: tuple[float, float]):
        self.image = image
        height, width = image.shape[:2]
        self.scale = float(min(height, width))
        self.origin = (
            (width - self.scale) / 2 + offset[0] * self.scale,
            (height - self.scale) / 2 + offset[1] * self.scale,
        )

    def copy(self) -> Canvas:
        twin = object.__new__(Canvas)
        twin.image, twin.scale, twin.origin = self.image.copy(), self.scale, self.origin
        return twin

    def _px(self, x: float, y: float) -> tuple[float, float]:
        return self.origin[0] + x * self.scale, self.origin[1] + y * self.scale

    def paint(self, shapes: list[Shape], colour: Colour) -> None:
        """Blend ``colour`` where any of ``shapes`` covers a pixel, anti-aliased over one pixel.

        The union's distance is the minimum of the shapes' distances, so a hand (palm and fingers) or an
        arm (two segments) is blended once: no darker seams where its parts overlap, and one pass over
        the pixels instead of one per part (drawing is most of the rendering time).
        """
        height, width = self.image.shape[:2]
        x0 = max(0, math.floor(min(shape.bounds[0] for shape in shapes)) - 1)
        y0 = max(0, math.floor(min(shape.bounds[1] for shape in shapes)) - 1)
        x1 = min(width, math.ceil(max(shape.bounds[2] for shape in shapes)) + 2)
        y1 = min(height, math.ceil(max(shape.bounds[3] for shape in shapes)) + 2)
        if x0 >= x1 or y0 >= y1:
            return
        # Pixel centres as a row and a column: the distance functions broadcast them to the box.
        px = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5
        py = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5
        distance = shapes[0].distance(px, py)
        for shape in shapes[1:]:
            distance = np.minimum(distance, shape.distance(px, py))
        alpha = np.clip(0.5 - distance, 0.0, 1.0)[..., None]
        region = self.image[y0:y1, x0:x1]
        region += alpha * (np.asarray(colour, dtype=np.float32) - region)

    def ellipse(self, x: float, y: float, rx: float, ry: float, angle: float) -> Shape:
        cx, cy = self._px(x, y)
        rx, ry = max(rx * self.scale, 0.5), max(ry * self.scale, 0.5)
        cos, sin = math.cos(angle), math.sin(angle)

        def distance(px, py):
            u = (px - cx) * cos + (py - cy) * sin
            v = -(px - cx) * sin + (py - cy) * cos
            k = np.sqrt((u / rx) ** 2 + (v / ry) ** 2)
            gradient = np.sqrt((u / rx**2) ** 2 + (v / ry**2) ** 2)
            return (k - 1) * k / np.maximum(gradient, 1e-6)

        reach = max(rx, ry)
        return Shape((cx - reach, cy - reach, cx + reach, cy + reach), distance)

    def capsule(self, a: tuple[float, float], b: tuple[float, float], radius: float) -> Shape:
        (ax, ay), (bx, by) = self._px(*a), self._px(*b)
        r = max(radius * self.scale, 0.5)
        dx, dy = bx - ax, by - ay
        length2 = max(dx * dx + dy * dy, 1e-9)

        def distance(px, py):
            t = np.clip(((px - ax) * dx + (py - ay) * dy) / length2, 0.0, 1.0)
            return np.hypot(px - ax - t * dx, py - ay - t * dy) - r

        return Shape((min(ax, bx) - r, min(ay, by) - r, max(ax, bx) + r, max(ay, by) + r), distance)

    def rounded_box(self, x: float, y: float, half_w: float, half_h: float, radius: float) -> Shape:
        cx, cy = self._px(x, y)
        hw, hh, r = half_w * self.scale, half_h * self.scale, radius * self.scale

        def distance(px, py):
            qx, qy = np.abs(px - cx) - hw + r, np.abs(py - cy) - hh + r
            outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
            return outside + np.minimum(np.maximum(qx, qy), 0) - r

        return Shape((cx - hw, cy - hh, cx + hw, cy + hh), distance)


def _shoulders(look: SignerLook) -> dict[str, tuple[float, float]]:
    half = 0.17 * look.body_scale
    return {"dominant": (0.5 - half, 0.50), "passive": (0.5 + half, 0.50)}


def draw_signer_body(canvas: Canvas, look: SignerLook) -> None:
    """Everything that does not move: torso, neck, head, hair and face."""
    hs, bs = look.head_scale, look.body_scale
    canvas.paint([canvas.rounded_box(0.5, 0.80, 0.20 * bs, 0.35, 0.08)], look.clothes)
    canvas.paint([canvas.capsule((0.5, 0.37), (0.5, 0.46), 0.036 * bs)], look.skin)
    canvas.paint([canvas.ellipse(0.5, 0.252, 0.093 * hs, 0.088 * hs, 0.0)], look.hair)
    canvas.paint([canvas.ellipse(0.5, 0.288, 0.083 * hs, 0.106 * hs, 0.0)], look.skin)
    eyes = [canvas.ellipse(0.5 + side * 0.032 * hs, 0.272, 0.011 * hs, 0.009 * hs, 0.0) for side in (-1, 1)]
    canvas.paint(eyes, (0.12, 0.10, 0.10))
    canvas.paint([canvas.capsule((0.5 - 0.02 * hs, 0.338), (0.5 + 0.02 * hs, 0.338), 0.006 * hs)], (0.55, 0.25, 0.25))


def draw_hand(canvas: Canvas, x: float, y: float, shape: str, angle: float, size: float, colour: Colour) -> None:
    if shape == "flat":
        canvas.paint([canvas.ellipse(x, y, 1.6 * size, 0.6 * size, angle)], colour)
        return
    parts = [canvas.ellipse(x, y, size if shape == "fist" else 0.85 * size, 0.9 * size, angle)]
    for spread in {"fist": (), "point": (0.0,), "spread": (-0.35, 0.35)}[shape]:
        tip = (x + 1.7 * size * math.cos(angle + spread), y + 1.7 * size * math.sin(angle + spread))
        parts.append(canvas.capsule((x, y), tip, 0.27 * size))
    canvas.paint(parts, colour)


def _sleeve(look: SignerLook) -> Colour:
    return tuple(min(1.0, 1.3 * c + 0.05) for c in look.clothes)


def _draw_arm(canvas: Canvas, look: SignerLook, hand: str, track: HandTrack, frame: int) -> None:
    sx, sy = _shoulders(look)[hand]
    hx, hy = (float(v) for v in track.xy[frame])
    outward = -1.0 if hand == "dominant" else 1.0
    elbow = ((sx + hx) / 2 + outward * 0.07 * look.body_scale, (sy + hy) / 2 + 0.06)
    width = 0.032 * look.body_scale
    canvas.paint([canvas.capsule((sx, sy), elbow, width), canvas.capsule(elbow, (hx, hy), width * 0.9)], _sleeve(look))


def render_frames(
    look: SignerLook,
    choreography: Choreography,
    height: int,
    width: int,
    placement: tuple[float, float],
    noise_rng: np.random.Generator,
) -> Iterator[np.ndarray]:
    """Yield RGB uint8 frames (height, width, 3) of ``look`` performing ``choreography``."""
    background = np.empty((height, width, 3), dtype=np.float32)
    background[:] = look.background
    offset = (look.offset[0] + placement[0], look.offset[1] + placement[1])
    body = Canvas(background, offset)
    draw_signer_body(body, look)
    hand_size = 0.042 * look.hand_scale
    for frame in range(choreography.num_frames):
        canvas = body.copy()
        for hand, track in (("passive", choreography.passive), ("dominant", choreography.dominant)):
            _draw_arm(canvas, look, hand, track, frame)
        for track in (choreography.passive, choreography.dominant):
            x, y = (float(v) for v in track.xy[frame])
            draw_hand(canvas, x, y, HANDSHAPES[track.shape[frame]], float(track.angle[frame]), hand_size, look.skin)
        image = canvas.image
        if look.noise > 0:
            image += look.noise * noise_rng.standard_normal(image.shape, dtype=np.float32)
        yield (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
