"""The DALI loader: VP9 decoding and clip augmentation on the GPU (``device="mixed"``) or the CPU.

Python only reads the encoded bytes and draws each clip's plan (the same plans the reference loader
executes); DALI decodes exactly the planned frames, in order and with the replicate padding, then crops,
flips and normalises them, applies the plan's gain and offset, and pads the batch to its longest clip with
zeros. Each sample's index travels through the pipeline with its frames, and its clip length and decoded
frame count come out of it too, so a batch is described by what DALI returns, however DALI schedules its
calls to the source.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator

import numpy as np
import torch

from qslr.pipelines.augmentation import PIXEL_OFFSET, PIXEL_SCALE
from qslr.pipelines.batch import Batch
from qslr.pipelines.clip_source import ClipSource
from qslr.pipelines.dali_video import NVDEC_VP9_MIN_SIZE, decode_videos
from qslr.pipelines.epoch_plan import SINGLE_PROCESS, EpochReader, Sharding
from qslr.pipelines.video_io import VideoDecodeError


class DaliUnavailableError(ImportError):
    pass


class FramesTooSmallForNvdecError(ValueError):
    pass


def check_nvdec_size(source: ClipSource) -> None:
    """Refuse GPU decoding of a dataset whose frames NVDEC cannot decode, before any pipeline is built."""
    min_width, min_height = NVDEC_VP9_MIN_SIZE
    small = [r for r in source.records if r.width < min_width or r.height < min_height]
    if small:
        raise FramesTooSmallForNvdecError(
            f"{source.root}: {len(small)} {source.split} videos are smaller than NVDEC's VP9 minimum of "
            f"{min_width}x{min_height} (e.g. {small[0].id}, {small[0].width}x{small[0].height}); decode on the CPU "
            f"(device cpu) or prepare the frames at {min_width}x{min_height} or more "
            f"(qslr data synth --size {max(min_width, min_height)}, qslr data prepare --size WxH)")


def _dali():
    try:
        import nvidia.dali as dali
    except ImportError:
        raise DaliUnavailableError("the DALI loader needs nvidia-dali (pip install -e '.[dali]'); "
                                   "data.loader=reference works without it") from None
    return dali


class _Feeder:
    """DALI's external source: one call per batch of the epoch; each sample's index goes with its data."""

    def __init__(self, source: ClipSource):
        self.source = source
        self.batches: list[list[int]] = []
        self.epoch = 0
        # What each iteration of this epoch was given, kept only to name the video when DALI fails a batch as a
        # whole: the batches themselves carry their indices.
        self.fed: dict[int, list[int]] = {}

    def start(self, batches: list[list[int]], epoch: int) -> None:
        self.batches, self.epoch, self.fed = batches, epoch, {}

    def stop(self) -> None:
        """Feed nothing more this epoch: what DALI has already taken is all it will decode."""
        self.batches = []

    def fed_from(self, iteration: int) -> list[int]:
        """The samples of every batch fed from ``iteration`` on: those DALI may still be working on."""
        return [i for it in sorted(self.fed) if it >= iteration for i in self.fed[it]]

    def __call__(self, info):
        if info.iteration >= len(self.batches):
            raise StopIteration
        plans = {i: self.source.plan(i, self.epoch) for i in self.batches[info.iteration]}
        # Longest first, as the model's packed sequences and the reference loader order them.
        indices = sorted(plans, key=lambda i: -plans[i].length)
        self.fed[info.iteration] = indices
        crop = self.source.settings.crop_size
        columns: tuple[list, ...] = ([], [], [], [], [], [], [], [])
        for i in indices:
            record, plan = self.source.records[i], plans[i]
            try:
                encoded = np.fromfile(self.source.path(i), dtype=np.uint8)
            except OSError as exc:
                raise VideoDecodeError(f"video {record.id}: {exc}") from None
            if encoded.size == 0:
                raise VideoDecodeError(f"video {record.id}: {self.source.path(i)} is empty")
            spare_x, spare_y = record.width - crop, record.height - crop
            columns[0].append(encoded)
            columns[1].append(plan.order)
            columns[2].append(np.float32(plan.crop_x / spare_x if spare_x else 0.5))
            columns[3].append(np.float32(plan.crop_y / spare_y if spare_y else 0.5))
            columns[4].append(np.int32(plan.flip))
            columns[5].append(np.int64(i))
            # gain * (x - offset0) / scale0 + offset as one normalisation, (x - mean) / std, in the crop's pass.
            std = PIXEL_SCALE / plan.gain
            columns[6].append(np.full(3, PIXEL_OFFSET - plan.offset * std, dtype=np.float32))
            columns[7].append(np.full(3, std, dtype=np.float32))
        return columns


# The pipeline's outputs, as DALIGenericIterator names them.
_OUTPUTS = ("videos", "index", "length", "decoded")


class DaliLoader(EpochReader):
    def __init__(self, source: ClipSource, batch_size: int, shuffle: bool, drop_last: bool,
                 sharding: Sharding = SINGLE_PROCESS, num_threads: int = 2, device: str = "cpu", device_id: int = 0,
                 prefetch: int = 2):
        dali = _dali()
        from nvidia.dali import fn, types
        from nvidia.dali.plugin.pytorch import DALIGenericIterator

        if device != "cpu":
            check_nvdec_size(source)

        super().__init__(len(source), source.seed, batch_size, shuffle, drop_last, sharding)
        self.source = source
        self._feeder = _Feeder(source)
        gpu = device != "cpu"
        crop = source.settings.crop_size

        @dali.pipeline_def(batch_size=batch_size, num_threads=num_threads, device_id=device_id if gpu else None,
                           prefetch_queue_depth=prefetch, exec_dynamic=True)
        def clips():
            encoded, order, crop_x, crop_y, flip, index, mean, std = fn.external_source(
                source=self._feeder, num_outputs=8, batch=True, batch_info=True,
                dtype=[types.UINT8, types.INT32, types.FLOAT, types.FLOAT, types.INT32, types.INT64, types.FLOAT,
                       types.FLOAT])
            # Decoding straight through and gathering afterwards beats asking the decoder for the planned
            # frames, whose repeats (padding, stretched clips) make it seek back.
            frames = decode_videos(encoded, gpu)  # the served `preprocess` model's decoder too
            decoded = frames.shape(device="cpu")[0]
            frames = fn.sequence_rearrange(frames, new_order=order)
            frames = fn.crop_mirror_normalize(frames, crop=(crop, crop), crop_pos_x=crop_x, crop_pos_y=crop_y,
                                              mirror=flip, mean=mean, std=std, dtype=types.FLOAT,
                                              output_layout="FCHW")
            return fn.pad(frames, axes=(0,), fill_value=0.0), index, frames.shape(device="cpu")[0], decoded

        self._pipeline = clips()
        # DALI's own iterator hands the outputs to PyTorch (on the GPU without leaving it). Without a reader it
        # runs until the external source raises StopIteration, so last_batch_policy and sizes do not apply:
        # every batch, the last one short, is as the feeder made it. The epoch's batches are only known when
        # __iter__ starts it, hence no first batch at construction and a reset of our own per epoch.
        self._iterator = DALIGenericIterator(self._pipeline, list(_OUTPUTS), auto_reset=False,
                                             prepare_first_batch=False)
        self._fresh = True
        # Which __iter__ owns the pipeline; an epoch left early is drained by whoever comes next.
        self._run = 0
        self._unfinished = False

    def _drain(self) -> None:
        """Finish an epoch its consumer left early: DALI has batches of it decoded or queued ahead (its
        prefetch), which would otherwise come out as the first batches of the next epoch."""
        self._feeder.stop()
        with contextlib.suppress(StopIteration, RuntimeError):  # a broken video in a batch nobody will read
            while True:
                next(self._iterator)
        self._unfinished = False

    def __iter__(self) -> Iterator[Batch]:
        if self._unfinished:
            self._drain()
        self._run += 1
        run = self._run
        # The feeder must know the epoch before the reset, which prefetches its first batches.
        self._feeder.start(self.remaining_batches(), self.epoch)
        if not self._fresh:
            self._iterator.reset()
        self._fresh = False
        self._unfinished = True
        try:
            yield from self._batches()
            self._unfinished = False
        finally:
            if self._unfinished and self._run == run:
                self._drain()

    def _batches(self) -> Iterator[Batch]:
        for consumed in itertools.count():
            try:
                output = next(self._iterator)[0]
            except StopIteration:
                return
            except RuntimeError as exc:
                raise self._explain(exc, consumed) from None
            indices = output["index"].tolist()
            for i, frames in zip(indices, output["decoded"].tolist(), strict=True):
                record = self.source.records[i]
                if frames != record.num_frames:
                    raise VideoDecodeError(f"video {record.id}: {self.source.path(i)} decoded to {frames} frames, "
                                           f"{self.source.split}.jsonl declares {record.num_frames}")
            yield Batch(
                videos=output["videos"],
                lengths=output["length"].to(torch.int64),
                targets=torch.tensor([g for i in indices for g in self.source.targets[i]], dtype=torch.int64),
                target_lengths=torch.tensor([len(self.source.targets[i]) for i in indices], dtype=torch.int64),
                ids=[self.source.records[i].id for i in indices],
            )

    def _explain(self, error: RuntimeError, consumed: int) -> Exception:
        """DALI fails a whole batch: find and name the video responsible among those it was given and had not
        returned yet (``consumed`` batches of the epoch came out whole)."""
        suspects = self._feeder.fed_from(consumed)
        broken = self.source.find_broken(suspects)
        if broken is not None:
            return broken
        ids = ", ".join(self.source.records[i].id for i in suspects)
        return RuntimeError(f"DALI failed on a batch of videos {ids}: {str(error).splitlines()[0]}")
