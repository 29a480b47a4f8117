"""The reference loader: a PyTorch DataLoader with the DALI pipeline's exact semantics.

It is the portable fallback where DALI is not installed and the baseline of every data benchmark.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from qslr.pipelines.batch import Batch, collate
from qslr.pipelines.clip_source import ClipSource
from qslr.pipelines.epoch_plan import SINGLE_PROCESS, EpochReader, Sharding
from qslr.pipelines.process_lifetime import end_with

WORKER_TIMEOUT_S = 600  # a stuck worker becomes an error instead of a hang


def _worker_context() -> multiprocessing.context.BaseContext:
    """The fork server the workers come from, made to import the clip code once: each worker forked from it
    starts with torch and the decoders loaded instead of importing them itself (seconds per worker, paid again
    by every loader, and evaluation makes a loader each epoch)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])  # this module imports torch and the clip source
    return context


def _start_worker(owner: int, worker_id: int) -> None:
    """A worker follows the process that owns its loader. It ends with it: its parent is the fork server, not
    that process, and the fork server lives as long as any of its children, so nothing else would end it when the
    owner is killed. And it leaves the owner's process group: torchrun stops a rank by signalling its whole group,
    and a worker ended by that before the rank's next step would fail the checkpoint the rank stops to write (a
    signal to the worker itself, as the loader's own shutdown sends, still ends it)."""
    os.setpgid(0, 0)
    end_with(owner)


class _Clips(Dataset):
    """Items are (sample index, epoch): persistent workers learn the epoch from the sampler."""

    def __init__(self, source: ClipSource):
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, item: tuple[int, int]):
        index, epoch = item
        return torch.from_numpy(self.source.clip(index, epoch)), self.source.targets[index], \
            self.source.records[index].id


class _EpochSampler:
    """Batches of (index, epoch) for the loader's current epoch and resume position."""

    def __init__(self, loader: ReferenceLoader):
        self.loader = loader

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for batch in self.loader.remaining_batches():
            yield [(index, self.loader.epoch) for index in batch]

    def __len__(self) -> int:
        return len(self.loader.remaining_batches())


def _collate(items) -> Batch:
    clips, targets, ids = zip(*items, strict=True)
    return collate(clips, targets, ids)


class ReferenceLoader(EpochReader):
    def __init__(self, source: ClipSource, batch_size: int, shuffle: bool, drop_last: bool,
                 sharding: Sharding = SINGLE_PROCESS, num_workers: int = 0, reuse_workers: bool = True):
        """``reuse_workers``: keep the worker processes from one epoch to the next (a training loader). A loader
        read once (evaluation) lets them go when it is done: persistent workers are only stopped when the loader is
        collected, and then each takes PyTorch's 5-s join timeout to go (pytorch/pytorch#81794)."""
        super().__init__(len(source), source.seed, batch_size, shuffle, drop_last, sharding)
        self.source, self.num_workers = source, num_workers
        # Workers come from a fork server, not a fork of this process: a process that has already run
        # OpenMP, gRPC or CUDA code can deadlock its forked children.
        self._loader = DataLoader(_Clips(source), batch_sampler=_EpochSampler(self), collate_fn=_collate,
                                  num_workers=num_workers,
                                  timeout=WORKER_TIMEOUT_S if num_workers else 0,
                                  prefetch_factor=2 if num_workers else None,
                                  persistent_workers=num_workers > 0 and reuse_workers,
                                  multiprocessing_context=_worker_context() if num_workers else None,
                                  worker_init_fn=functools.partial(_start_worker, os.getpid()),
                                  # Its own generator: a DataLoader otherwise draws its workers' seeds from the
                                  # global stream at every epoch start, so training's dropout would depend on
                                  # where a run was resumed. Clips do not depend on it (their plans are seeded).
                                  generator=torch.Generator().manual_seed(source.seed))

    def __iter__(self) -> Iterator[Batch]:
        iterator = iter(self._loader)
        try:
            yield from iterator
        except (Exception, KeyboardInterrupt):
            # After an error, stop the workers now rather than when the loader is collected. A consumer that
            # merely stops reading (GeneratorExit) keeps them: the next epoch's iterator discards what they
            # had prefetched and resumes them.
            shutdown = getattr(iterator, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()
            raise
