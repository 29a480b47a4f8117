"""DALI's whole-video decoder, shared by the training loader and the served `preprocess` model.

Both decode VP9 (and the other codecs DALI reads) with the same operator, on the CPU or with NVDEC
(``device="mixed"``), so that a model is served the pixels it was trained on.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import torch

from qslr.pipelines.video_io import encode_video

# NVDEC refuses frames smaller than its per-codec minimum (cuvidGetDecoderCaps; DALI fails with "Video is too
# small in at least one dimension"). For VP9, the codec of every prepared dataset, it is 128x128 on the GPUs
# reported publicly; docs/nvidia_versions.md says where the figure comes from.
NVDEC_VP9_MIN_SIZE = (128, 128)  # (width, height)

# What one video costs DALI's decoder beyond its output, counted in RGB frames of the video's size. On the GPU
# (dali/operators/video/frames_decoder_gpu.{h,cc}, DALI 2.4) each video of a run has, while the run lasts, a
# reordering buffer of 8 RGB frames and an NVDEC decoder whose surfaces (min_num_decode_surfaces, 20 when the
# stream states none, plus 2 output surfaces) are NV12, half an RGB frame each: 8 + 22 / 2 = 19, rounded up.
# FFmpeg's CPU decoder keeps fewer (VP9's 8 reference pictures, in YUV 4:2:0); the same figure serves both.
DECODER_FRAMES_PER_VIDEO = 20


def decoded_bytes(frames: int, height: int, width: int) -> int:
    """Memory a video of ``frames`` frames of height x width holds while DALI decodes it: its RGB uint8 frames,
    (F, H, W, 3), all allocated at the start of the run, and the decoder's own frames."""
    return (frames + DECODER_FRAMES_PER_VIDEO) * height * width * 3


def decoding_runs(sizes: Sequence[int], budget: int, max_videos: int) -> list[list[int]]:
    """The videos of a batch (their `decoded_bytes`, in order) grouped into DALI runs: consecutive indices, at most
    ``max_videos`` a run, and the sizes of a run summing to at most ``budget``. DALI allocates a run's frames at
    once, so the budget bounds the memory of decoding a batch, however many videos it holds. A video larger than
    the budget alone cannot be decoded within it: the caller decodes it otherwise."""
    if max_videos < 1:
        raise ValueError(f"a DALI run holds at least one video, got max_videos={max_videos}")
    runs: list[list[int]] = []
    run: list[int] = []
    total = 0
    for index, size in enumerate(sizes):
        if size > budget:
            raise ValueError(f"video {index} needs {size} bytes decoded, over the budget of {budget} bytes alone")
        if run and (total + size > budget or len(run) == max_videos):
            runs.append(run)
            run, total = [], 0
        run.append(index)
        total += size
    if run:
        runs.append(run)
    return runs


def decode_videos(encoded, gpu: bool):
    """The decoding step of a DALI pipeline: encoded files (a batch of uint8 buffers) -> frames (F, H, W, 3)."""
    from nvidia.dali import fn

    return fn.decoders.video(encoded, device="mixed" if gpu else "cpu")


class VideoDecodePipeline:
    """Encoded videos in, RGB uint8 frames out, up to ``batch_size`` at a time over ``threads`` threads.

    The frames come back where DALI decoded them, as PyTorch tensors: in host memory on the CPU, in the GPU's
    memory with NVDEC (shared with DALI's output, not copied), so that whoever takes them can shrink them there
    before anything crosses to the host. DALI fails a run as a whole when one video of it cannot be decoded
    (RuntimeError); the pipeline keeps working for the next run.
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

    def decode(self, encoded: Sequence[np.ndarray]) -> list[torch.Tensor]:
        if not 1 <= len(encoded) <= self.batch_size:
            raise ValueError(f"a DALI decoding run takes 1 to {self.batch_size} videos, got {len(encoded)}")
        self._pipeline.feed_input("encoded", list(encoded))
        (frames,) = self._pipeline.run()  # without a stream: the outputs are ready when run returns
        if self.gpu:
            return [torch.from_dlpack(frames[i]) for i in range(len(encoded))]
        return [torch.from_numpy(np.array(frames.at(i))) for i in range(len(encoded))]

    def self_test(self) -> None:
        """Decode a clip made here: raises, with DALI's or NVDEC's reason, where this pipeline cannot decode
        (in a container whose NVIDIA_DRIVER_CAPABILITIES lacks `video`, NVDEC's library is missing and every
        run fails, though the pipeline builds)."""
        width, height = NVDEC_VP9_MIN_SIZE
        clip = io.BytesIO()
        shades = (np.full((height, width, 3), shade, np.uint8) for shade in (64, 192))
        encode_video(clip, shades, 25, "libvpx-vp9", "webm", {"deadline": "realtime", "cpu-used": "8"})
        (frames,) = self.decode([np.frombuffer(clip.getvalue(), np.uint8)])
        if tuple(frames.shape) != (2, height, width, 3):
            raise RuntimeError(f"DALI decoded a 2-frame {width}x{height} test clip as {tuple(frames.shape)}")
