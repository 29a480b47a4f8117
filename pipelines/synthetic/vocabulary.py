"""The synthetic sign vocabulary: each gloss is a distinct hand motion at a place on the body."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

# Canonical coordinates: the unit square, x to the right, y down; the signer faces the camera and
# signs with the dominant hand on the left of the image.
ANCHORS: dict[str, tuple[float, float]] = {
    "forehead": (0.50, 0.19),
    "temple": (0.39, 0.25),
    "chin": (0.50, 0.41),
    "chest": (0.50, 0.61),
    "shoulder": (0.64, 0.52),  # the opposite shoulder: the hand crosses the body
    "side": (0.25, 0.57),
    "low": (0.44, 0.79),
}

MOTIONS = (
    "tap", "line_right", "line_left", "line_up", "line_down",
    "circle_cw", "circle_ccw", "zigzag", "shake", "arc",
)
HANDSHAPES = ("fist", "flat", "point", "spread")
ORIENTATIONS = (-math.pi / 2, -math.pi / 4, 0.0, -3 * math.pi / 4)  # radians; 0 points right, -pi/2 up

_AMPLITUDE = 0.09
_CONSONANTS = "BDFGKLMNPRSTVZ"
_VOWELS = "AEIOU"


@dataclass(frozen=True)
class SignDefinition:
    gloss: str
    anchor: str
    motion: str
    handshape: str
    orientation: float
    two_handed: bool
    frames: int  # duration at speed 1


def motion_offsets(motion: str, s: np.ndarray) -> np.ndarray:
    """Offsets (len(s), 2) of the hand from its anchor along a motion, s running from 0 to 1."""
    a = _AMPLITUDE
    zero = np.zeros_like(s)
    theta = 2 * np.pi * s
    if motion == "tap":
        xy = (zero, 0.5 * a * np.sin(2 * np.pi * s) ** 2)
    elif motion == "line_right":
        xy = ((s - 0.5) * 2 * a, zero)
    elif motion == "line_left":
        xy = ((0.5 - s) * 2 * a, zero)
    elif motion == "line_up":
        xy = (zero, (0.5 - s) * 2 * a)
    elif motion == "line_down":
        xy = (zero, (s - 0.5) * 2 * a)
    elif motion == "circle_cw":
        xy = (0.8 * a * np.sin(theta), -0.8 * a * np.cos(theta))
    elif motion == "circle_ccw":
        xy = (-0.8 * a * np.sin(theta), -0.8 * a * np.cos(theta))
    elif motion == "zigzag":
        xy = ((s - 0.5) * 2 * a, 0.45 * a * np.sin(3 * theta))
    elif motion == "shake":
        xy = (0.6 * a * np.sin(2 * theta), zero)
    elif motion == "arc":
        xy = (-a * np.cos(np.pi * s), -0.8 * a * np.sin(np.pi * s))
    else:
        raise ValueError(f"unknown motion {motion!r}")
    return np.stack(xy, axis=-1)


def gloss_names(count: int, rng: np.random.Generator) -> list[str]:
    """Pronounceable consonant-vowel names (KALU, MIRO, ...), chosen to be left alone by the Phoenix
    normalisation rules: no prefixes, digits, single letters or rule words."""
    syllables = [c + v for c, v in itertools.product(_CONSONANTS, _VOWELS)]
    names = [a + b for a, b in itertools.product(syllables, syllables) if a != b]
    picked = rng.choice(len(names), size=count, replace=False)
    return [names[i] for i in picked]


def max_vocabulary_size() -> int:
    return len(ANCHORS) * len(MOTIONS) * len(HANDSHAPES) * len(ORIENTATIONS) * 2


def make_vocabulary(size: int, rng: np.random.Generator) -> list[SignDefinition]:
    """``size`` distinct signs; every (place, motion) pair is used once before any is reused, so a
    small vocabulary differs in the large, learnable features first and in hand shape only after."""
    if not 1 <= size <= max_vocabulary_size():
        raise ValueError(f"vocabulary size must lie in 1..{max_vocabulary_size()}, got {size}")
    pairs = list(itertools.product(ANCHORS, MOTIONS))
    seen: set[tuple] = set()
    signs: list[tuple] = []
    while len(signs) < size:
        for index in rng.permutation(len(pairs)):
            if len(signs) == size:
                break
            anchor, motion = pairs[index]
            while True:
                key = (anchor, motion, int(rng.integers(len(HANDSHAPES))),
                       int(rng.integers(len(ORIENTATIONS))), bool(rng.integers(2)))
                if key not in seen:
                    break
            seen.add(key)
            signs.append(key)
    names = gloss_names(size, rng)
    durations = rng.integers(5, 10, size=size)
    return [
        SignDefinition(name, anchor, motion, HANDSHAPES[shape], ORIENTATIONS[orientation], two_handed, int(frames))
        for name, (anchor, motion, shape, orientation, two_handed), frames in zip(names, signs, durations, strict=True)
    ]
