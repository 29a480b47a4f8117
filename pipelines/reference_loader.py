"""The reference loader: a PyTorch DataLoader with the DALI pipeline's exact semantics.

It is the portable fallback where DALI is not installed and the baseline of every data benchmark.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from pipelines.batch import Batch, collate
from pipelines.clip_source import ClipSource
from pipelines.epoch_plan import SINGLE_PROCESS, Sharding, epoch_batches

WORKER_TIMEOUT_S = 600  # a stuck worker becomes an error instead of a hang


class _Clips(Dataset):
    def __init__(self, source: ClipSource, epoch: int):
        self.source, self.epoch = source, epoch

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int):
        return torch.from_numpy(self.source.clip(index, self.epoch)), self.source.targets[index], \
            self.source.records[index].id


def _collate(items) -> Batch:
    clips, targets, ids = zip(*items, strict=True)
    return collate(clips, targets, ids)


class ReferenceLoader:
    def __init__(self, source: ClipSource, batch_size: int, shuffle: bool, drop_last: bool,
                 sharding: Sharding = SINGLE_PROCESS, num_workers: int = 0):
        self.source, self.batch_size, self.shuffle, self.drop_last = source, batch_size, shuffle, drop_last
        self.sharding, self.num_workers = sharding, num_workers
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Read ``epoch``'s plan, from its ``start_batch``-th batch on (to resume within an epoch)."""
        self.epoch, self.start_batch = epoch, start_batch

    def batches(self) -> list[list[int]]:
        return epoch_batches(len(self.source), self.batch_size, self.epoch, self.source.seed, self.shuffle,
                             self.drop_last, self.sharding, even=self.shuffle)

    def __len__(self) -> int:
        return len(self.batches())

    def remaining_batches(self) -> list[list[int]]:
        return self.batches()[self.start_batch:]

    def __iter__(self) -> Iterator[Batch]:
        # Workers are started per epoch, so each sees the current epoch's plans.
        loader = DataLoader(_Clips(self.source, self.epoch), batch_sampler=self.remaining_batches(),
                            collate_fn=_collate, num_workers=self.num_workers,
                            timeout=WORKER_TIMEOUT_S if self.num_workers else 0,
                            prefetch_factor=2 if self.num_workers else None)
        iterator = iter(loader)
        try:
            yield from iterator
        finally:
            # Stop the workers now, not whenever the iterator is collected: after an error they would
            # otherwise linger until a join timeout.
            shutdown = getattr(iterator, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()
