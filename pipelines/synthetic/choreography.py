"""From a sentence of signs to per-frame hand poses, with transitions between signs."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from qslr.pipelines.sign_spans import SignSpan
from qslr.pipelines.synthetic.vocabulary import ANCHORS, HANDSHAPES, SignDefinition, motion_offsets

REST = {"dominant": (0.36, 0.93), "passive": (0.64, 0.93)}
REST_SHAPE = HANDSHAPES.index("fist")
REST_ANGLE = -math.pi / 2
TRANSITION_FRAMES = 3
REST_FRAMES = (2, 5)  # lead-in and lead-out, drawn per video
# Between two sentences signed in a row, the hands go back to rest and wait this many frames (drawn per pause).
SENTENCE_PAUSE_FRAMES = (3, 12)
TREMOR = 0.003


@dataclass
class HandTrack:
    xy: np.ndarray  # (T, 2) canonical coordinates
    shape: np.ndarray  # (T,) index into HANDSHAPES
    angle: np.ndarray  # (T,) radians


@dataclass
class Choreography:
    dominant: HandTrack
    passive: HandTrack
    # Each sign's own frames, (first, one past the last), without the transitions into and out of it.
    signs: tuple[tuple[int, int], ...] = ()

    @property
    def num_frames(self) -> int:
        return len(self.dominant.xy)

    def sign_spans(self, signs: list[SignDefinition]) -> tuple[SignSpan, ...]:
        """Where each of the signs this choreography was made of is signed."""
        return tuple(SignSpan(sign.gloss, first, stop - first) for sign, (first, stop) in zip(signs, self.signs,
                                                                                              strict=True))


@dataclass(frozen=True)
class _Pose:
    x: float
    y: float
    shape: int
    angle: float


def _mirror(pose: _Pose) -> _Pose:
    angle = math.pi - pose.angle
    return _Pose(1.0 - pose.x, pose.y, pose.shape, math.atan2(math.sin(angle), math.cos(angle)))


class _TrackBuilder:
    def __init__(self, start: _Pose):
        self.xy: list[np.ndarray] = []
        self.shape: list[np.ndarray] = []
        self.angle: list[np.ndarray] = []
        self.last = start

    def hold(self, frames: int) -> None:
        self.move_to(self.last, frames)

    def move_to(self, target: _Pose, frames: int) -> None:
        t = (np.arange(1, frames + 1) / frames) if frames else np.zeros(0)
        ease = (1 - np.cos(np.pi * t)) / 2
        a, b = self.last, target
        self.xy.append(np.stack([a.x + (b.x - a.x) * ease, a.y + (b.y - a.y) * ease], axis=-1))
        self.shape.append(np.where(t < 0.5, a.shape, b.shape))
        self.angle.append(a.angle + (b.angle - a.angle) * ease)
        self.last = target

    def follow(self, xy: np.ndarray, shape: int, angle: float) -> None:
        self.xy.append(xy)
        self.shape.append(np.full(len(xy), shape))
        self.angle.append(np.full(len(xy), angle))
        self.last = _Pose(float(xy[-1, 0]), float(xy[-1, 1]), shape, angle)

    @property
    def frames(self) -> int:
        return sum(len(segment) for segment in self.xy)

    def build(self, tremor: np.ndarray) -> HandTrack:
        xy = np.concatenate(self.xy)
        return HandTrack(xy + tremor, np.concatenate(self.shape).astype(np.int64), np.concatenate(self.angle))


def choreograph(signs: list[SignDefinition], speed: float, rng: np.random.Generator) -> Choreography:
    """Rest, then each sign preceded by a transition from wherever the hands are, then rest."""
    return choreograph_sentences([signs], speed, rng)


def choreograph_sentences(sentences: list[list[SignDefinition]], speed: float, rng: np.random.Generator
                          ) -> Choreography:
    """Sentences signed in a row by one signer: between two, the hands go back to rest and wait, as a signer
    pauses between sentences. One sentence is `choreograph`'s video, drawn from ``rng`` alike."""
    rest = {hand: _Pose(*REST[hand], REST_SHAPE, REST_ANGLE) for hand in REST}
    dominant, passive = _TrackBuilder(rest["dominant"]), _TrackBuilder(rest["passive"])
    lead_in, lead_out = (int(rng.integers(REST_FRAMES[0], REST_FRAMES[1] + 1)) for _ in range(2))
    transition = max(2, round(TRANSITION_FRAMES / speed))
    dominant.hold(lead_in)
    passive.hold(lead_in)
    spans = []
    for index, signs in enumerate(sentences):
        if index:
            pause = int(rng.integers(SENTENCE_PAUSE_FRAMES[0], SENTENCE_PAUSE_FRAMES[1] + 1))
            for hand, builder in (("dominant", dominant), ("passive", passive)):
                builder.move_to(rest[hand], transition)
                builder.hold(pause)
        for sign in signs:
            spans.append(_sign(sign, speed, transition, rng, dominant, passive, rest["passive"]))
    for hand, builder in (("dominant", dominant), ("passive", passive)):
        builder.move_to(rest[hand], transition)
        builder.hold(lead_out)
    total = dominant.frames
    return Choreography(dominant.build(rng.normal(0.0, TREMOR, (total, 2))),
                        passive.build(rng.normal(0.0, TREMOR, (total, 2))), tuple(spans))


def _sign(sign: SignDefinition, speed: float, transition: int, rng: np.random.Generator, dominant: _TrackBuilder,
          passive: _TrackBuilder, passive_rest: _Pose) -> tuple[int, int]:
    """A transition to the sign's start, then the sign; its own frames (first, one past the last)."""
    frames = max(4, round(sign.frames / speed * rng.uniform(0.95, 1.05)))
    path = np.asarray(ANCHORS[sign.anchor]) + motion_offsets(sign.motion, np.linspace(0.0, 1.0, frames))
    shape = HANDSHAPES.index(sign.handshape)
    start = _Pose(float(path[0, 0]), float(path[0, 1]), shape, sign.orientation)
    dominant.move_to(start, transition)
    first = dominant.frames
    dominant.follow(path, shape, sign.orientation)
    if sign.two_handed:
        mirrored = _mirror(start)
        passive.move_to(mirrored, transition)
        passive.follow(np.stack([1.0 - path[:, 0], path[:, 1]], axis=-1), shape, mirrored.angle)
    else:
        passive.move_to(passive_rest, transition)
        passive.hold(frames)
    return first, first + frames
