"""Choosing a loader by name: both yield the same Batch from the same plans."""

from __future__ import annotations

from qslr.pipelines.clip_source import ClipSource
from qslr.pipelines.dali_loader import DaliLoader
from qslr.pipelines.epoch_plan import SINGLE_PROCESS, Sharding
from qslr.pipelines.loader_choices import LOADERS
from qslr.pipelines.reference_loader import ReferenceLoader


def build_loader(kind: str, source: ClipSource, batch_size: int, shuffle: bool, drop_last: bool,
                 sharding: Sharding = SINGLE_PROCESS, workers: int = 2, device: str = "cpu",
                 device_id: int = 0, reuse_workers: bool = True) -> DaliLoader | ReferenceLoader:
    """``workers`` are DALI threads or DataLoader processes; ``device`` cuda decodes on the GPU (DALI);
    ``reuse_workers``: the reference loader keeps its processes from epoch to epoch (False: a loader read once)."""
    if kind == "dali":
        return DaliLoader(source, batch_size, shuffle, drop_last, sharding, num_threads=max(1, workers),
                          device=device, device_id=device_id)
    if kind == "reference":
        return ReferenceLoader(source, batch_size, shuffle, drop_last, sharding, num_workers=workers,
                               reuse_workers=reuse_workers)
    raise ValueError(f"unknown loader {kind!r} (known: {', '.join(LOADERS)})")
