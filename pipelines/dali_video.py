"""DALI's whole-video decoder, shared by the training loader and the served `preprocess` model.

Both decode VP9 (and the other codecs DALI reads) with the same operator, on the CPU or with NVDEC
(``device="mixed"``), so that a model is served the pixels it was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def decode_videos(encoded, gpu: bool):
    """The decoding step of a DALI pipeline: encoded files (a batch of uint8 buffers) -> frames (F, H, W, 3)."""
    from nvidia.dali import fn

    return fn.decoders.video(encoded, device="mixed" if gpu else "cpu")


class VideoDecodePipeline:
    """Encoded videos in, RGB uint8 frames out, up to ``batch_size`` at a time over ``threads`` threads.

    DALI fails a run as a whole when one video of it cannot be decoded (RuntimeError); the pipeline keeps
    working for the next run.
    """

    def __init__(self, batch_size: int, threads: int = 2, device: str = "cpu", device_id: int = 0):
        from nvidia.dali import fn, pipeline_def, types

        if device not in ("cpu", "gpu"):
            raise ValueError(f"DALI decoding device must be cpu or gpu, got {device!r}")
        self.batch_size, self.gpu = batch_size, device == "gpu"

        @pipeline_def(batch_size=batch_size, num_threads=threads, device_id=device_id if self.gpu else None,
                      prefetch_queue_depth=1, exec_dynamic=True)
        def decoding():
            return decode_videos(fn.external_source(name="encoded", dtype=types.UINT8, ndim=1), self.gpu)

        self._pipeline = decoding()
        self._pipeline.build()

    def decode(self, encoded: Sequence[np.ndarray]) -> list[np.ndarray]:
        if not 1 <= len(encoded) <= self.batch_size:
            raise ValueError(f"a DALI decoding run takes 1 to {self.batch_size} videos, got {len(encoded)}")
        self._pipeline.feed_input("encoded", list(encoded))
        (frames,) = self._pipeline.run()
        if self.gpu:
            frames = frames.as_cpu()
        return [np.array(frames.at(i)) for i in range(len(encoded))]
