"""Signer appearance: realistic skin tones, dark clothes and grey studio backgrounds.

Uniformly random colours make a small CNN recognise the signer instead of the hands, so appearance
varies the way a real corpus does, and ``appearance_variation`` scales how far it strays from one look.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qslr.pipelines.synthetic.spec import SynthSpec

SKIN_TONES = np.array([
    (0.96, 0.80, 0.69), (0.92, 0.72, 0.58), (0.85, 0.64, 0.50), (0.76, 0.55, 0.40),
    (0.63, 0.44, 0.31), (0.48, 0.33, 0.23), (0.36, 0.25, 0.18),
])
CLOTHES = np.array([
    (0.10, 0.10, 0.12), (0.12, 0.14, 0.25), (0.20, 0.20, 0.22),
    (0.12, 0.20, 0.14), (0.25, 0.10, 0.12), (0.18, 0.14, 0.10),
])
HAIR = np.array([(0.08, 0.06, 0.05), (0.25, 0.16, 0.09), (0.45, 0.33, 0.20), (0.70, 0.58, 0.35), (0.55, 0.55, 0.55)])
# The look every signer shares when appearance_variation is 0.
_DEFAULT_SKIN, _DEFAULT_CLOTHES, _DEFAULT_HAIR, _DEFAULT_BACKGROUND = SKIN_TONES[2], CLOTHES[0], HAIR[1], 0.55


@dataclass(frozen=True)
class SignerLook:
    name: str
    skin: tuple[float, float, float]
    clothes: tuple[float, float, float]
    hair: tuple[float, float, float]
    background: tuple[float, float, float]
    head_scale: float
    body_scale: float
    hand_scale: float
    offset: tuple[float, float]  # placement in the frame, canonical units
    speed: float  # > 1 signs faster
    noise: float  # per-pixel camera noise std


def _blend(default: np.ndarray, sampled: np.ndarray, weight: float) -> tuple[float, float, float]:
    return tuple(float(c) for c in np.clip(default + weight * (sampled - default), 0.0, 1.0))


def make_signer(name: str, spec: SynthSpec, rng: np.random.Generator) -> SignerLook:
    w = spec.appearance_variation
    skin = SKIN_TONES[rng.integers(len(SKIN_TONES))] + rng.normal(0, 0.015, 3)
    clothes = CLOTHES[rng.integers(len(CLOTHES))] + rng.normal(0, 0.01, 3)
    hair = HAIR[rng.integers(len(HAIR))]
    grey = rng.uniform(0.45, 0.68)
    background = grey + rng.uniform(-0.03, 0.03, 3)
    return SignerLook(
        name=name,
        skin=_blend(_DEFAULT_SKIN, skin, w),
        clothes=_blend(_DEFAULT_CLOTHES, clothes, w),
        hair=_blend(_DEFAULT_HAIR, hair, w),
        background=_blend(np.full(3, _DEFAULT_BACKGROUND), background, w),
        head_scale=float(1 + rng.uniform(-1, 1) * spec.size_jitter),
        body_scale=float(1 + rng.uniform(-1, 1) * spec.size_jitter),
        hand_scale=float(1 + rng.uniform(-1, 1) * spec.size_jitter),
        offset=(float(rng.uniform(-2, 2) * spec.position_jitter), float(rng.uniform(-1.5, 1.5) * spec.position_jitter)),
        speed=float(1 + rng.uniform(-1, 1) * spec.speed_jitter),
        noise=float(rng.uniform(0.25, 1.0) * spec.noise),
    )


def make_signers(spec: SynthSpec, rng: np.random.Generator) -> list[SignerLook]:
    return [make_signer(f"Signer{i:02d}", spec, rng) for i in range(1, spec.signers + 1)]
