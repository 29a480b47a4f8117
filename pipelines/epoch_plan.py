"""Which samples each rank reads in which batches, per epoch: shuffled by seed and epoch, sharded by rank."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Sharding:
    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is outside a world of {self.world_size}")


SINGLE_PROCESS = Sharding()


def epoch_batches(num_samples: int, batch_size: int, epoch: int, seed: int, shuffle: bool, drop_last: bool,
                  sharding: Sharding = SINGLE_PROCESS, even: bool = True) -> list[list[int]]:
    """Batches of sample indices for one rank.

    Every rank draws the same permutation and takes every world_size-th sample, so ranks see disjoint
    samples. With ``even`` (training) the permutation is first padded by wrapping around to a multiple of
    the world size, as DistributedSampler does, so that all ranks run the same number of steps; without it
    (evaluation) every sample is read exactly once. No sample is dropped unless ``drop_last`` drops a
    short final batch.
    """
    order = np.random.default_rng([seed, epoch]).permutation(num_samples) if shuffle else np.arange(num_samples)
    world = sharding.world_size
    if even and world > 1 and num_samples:
        padded = -(-num_samples // world) * world
        order = np.concatenate([order, order[: padded - num_samples]])
    mine = order[sharding.rank::world].tolist()
    batches = [mine[i:i + batch_size] for i in range(0, len(mine), batch_size)]
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    return batches
