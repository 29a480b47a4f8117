"""Damaged uploads for the robustness checks (the fuzz tests and `qslr bench corrupt`): seeded mutants of valid
videos in several containers, each named by the kind of damage, so that a failure can say which kind escaped."""

from __future__ import annotations

import io
import random
from dataclasses import dataclass

import numpy as np

from qslr.pipelines.video_io import encode_video

# (container format, codec): the containers and codecs people upload.
CONTAINERS = {"webm": ("webm", "libvpx-vp9"), "mkv": ("matroska", "libvpx-vp9"), "mp4": ("mp4", "libx264"),
              "avi": ("avi", "mjpeg")}


@dataclass(frozen=True)
class Mutant:
    kind: str  # e.g. "mp4: bit flips 1e-03"
    data: bytes


def encode(frames: np.ndarray, container: str, fps: int = 25) -> bytes:
    """``frames`` (T, H, W, 3 uint8, even H and W) as one file of ``container`` (a key of CONTAINERS)."""
    fmt, codec = CONTAINERS[container]
    buffer = io.BytesIO()
    encode_video(buffer, frames, fps, codec, fmt, pixel_format="yuvj420p" if codec == "mjpeg" else "yuv420p")
    return buffer.getvalue()


def mutants(name: str, data: bytes, rng: random.Random, others: list[bytes]) -> list[Mutant]:
    """Damaged copies of ``data`` (a valid video called ``name``): bit flips at three densities, an overwritten,
    a deleted and a cut byte range, a damaged header and another container's header on this body."""
    out = []
    for density in (1e-4, 1e-3, 1e-2):
        damaged = bytearray(data)
        for _ in range(max(1, int(len(data) * 8 * density))):
            position = rng.randrange(len(damaged))
            damaged[position] ^= 1 << rng.randrange(8)
        out.append(Mutant(f"{name}: bit flips {density:.0e}", bytes(damaged)))
    start = rng.randrange(len(data) // 2)
    out.append(Mutant(f"{name}: 64 bytes overwritten",
                      data[:start] + bytes(rng.randrange(256) for _ in range(64)) + data[start + 64:]))
    out.append(Mutant(f"{name}: a range deleted", data[:start] + data[start + rng.randrange(16, 512):]))
    out.append(Mutant(f"{name}: cut short", data[: rng.randrange(16, len(data))]))
    out.append(Mutant(f"{name}: header damaged", bytes(rng.randrange(256) for _ in range(48)) + data[48:]))
    out.append(Mutant(f"{name}: another container's header", rng.choice(others)[:64] + data[64:]))
    return out


def mutant_pool(videos: dict[str, bytes], seed: int) -> list[Mutant]:
    """Mutants of every video in ``videos`` (name -> bytes), shuffled; the same for the same seed."""
    rng = random.Random(seed)
    others = list(videos.values())
    pool = [m for name, data in videos.items() for m in mutants(name, data, rng, others)]
    rng.shuffle(pool)
    return pool


def container_variants(frames: np.ndarray) -> dict[str, bytes]:
    """The same frames in every container of CONTAINERS (cropped to even sides, as 4:2:0 needs)."""
    even = frames[:, : frames.shape[1] // 2 * 2, : frames.shape[2] // 2 * 2]
    return {name: encode(even, name) for name in CONTAINERS}
