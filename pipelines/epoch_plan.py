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


class EpochReader:
    """What every loader shares: which batches of which epoch it reads, and from where on."""

    def __init__(self, num_samples: int, seed: int, batch_size: int, shuffle: bool, drop_last: bool,
                 sharding: Sharding):
        self.num_samples, self.seed, self.batch_size = num_samples, seed, batch_size
        self.shuffle, self.drop_last, self.sharding = shuffle, drop_last, sharding
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Read ``epoch``'s plan, from its ``start_batch``-th batch on (to resume within an epoch)."""
        self.epoch, self.start_batch = epoch, start_batch

    def batches(self) -> list[list[int]]:
        # Training pads ranks to equal step counts; evaluation reads every sample exactly once.
        return epoch_batches(self.num_samples, self.batch_size, self.epoch, self.seed, self.shuffle, self.drop_last,
                             self.sharding, even=self.shuffle)

    def __len__(self) -> int:
        return len(self.batches())

    def remaining_batches(self) -> list[list[int]]:
        return self.batches()[self.start_batch:]
