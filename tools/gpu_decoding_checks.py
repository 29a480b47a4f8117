"""The decoding parts of `qslr bench gpu-check`: DALI's `mixed` (NVDEC) training loader against the CPU reference
loader, and the served `dali-gpu` decoder against PyAV, on the same videos."""

from __future__ import annotations

import numpy as np
import torch

from qslr.pipelines.augmentation import PIXEL_SCALE
from qslr.tools.gpu_proof import NotProven
from qslr.tools.gpu_workspace import CROP_SIZE, FRAME_SIZE, Workspace

# Grey levels (of 255) between DALI on the GPU and the reference loader on the same plans. DALI on the CPU and the
# reference differ by at most one (tests/pipelines/test_loaders.py: both decode the same VP9 bits and convert YUV to
# RGB alike); NVDEC's conversion and the GPU's resampling may round once more. A wrong crop, flip or frame is tens.
LOADER_TOLERANCE_GREY = 2.0
# Grey levels between NVDEC and PyAV (FFmpeg's libvpx) decoding the same uploads: the VP9 decode is normative, the
# two YUV-to-RGB conversions are not the same code and may round a few levels apart; a wrong frame is tens.
DECODER_TOLERANCE_GREY = 8


def dali_loader(workspace: Workspace) -> dict:
    from qslr.pipelines.augmentation import ClipSettings
    from qslr.pipelines.clip_source import ClipSource
    from qslr.pipelines.loaders import build_loader

    settings = ClipSettings(crop_size=CROP_SIZE, flip_prob=0.5, temporal_rescale=0.2, min_frames=16, max_frames=230)
    source = ClipSource.open(workspace.corpus(), "train", settings, train=True, seed=1)
    gpu = build_loader("dali", source, 8, shuffle=True, drop_last=False, workers=2, device="cuda")
    cpu = build_loader("reference", source, 8, shuffle=True, drop_last=False, workers=2)
    worst, clips = 0.0, 0
    for a, b in zip(gpu, cpu, strict=True):
        if a.ids != b.ids or not torch.equal(a.lengths, b.lengths) or not torch.equal(a.targets, b.targets):
            raise AssertionError(f"DALI (GPU) and the reference loader disagree on a batch: {a.ids} against {b.ids}")
        worst = max(worst, (a.videos.cpu() - b.videos).abs().max().item() * PIXEL_SCALE)
        clips += len(a)
    if worst > LOADER_TOLERANCE_GREY:
        raise AssertionError(f"DALI (GPU) differs from the reference loader by {worst:.1f} grey levels, over the "
                             f"tolerance of {LOADER_TOLERANCE_GREY}")
    return {"clips": clips, "max_difference_grey_levels": worst, "tolerance": LOADER_TOLERANCE_GREY}


def dali_decoder(workspace: Workspace) -> dict:
    """The served `dali-gpu` video decoder (NVDEC) against PyAV on the same uploads."""
    from qslr.deploy.served_limits import ServedLimits
    from qslr.deploy.served_video import clip_decoder

    videos = sorted((workspace.corpus() / "videos" / "test").glob("*.webm"))[:16]
    if not videos:
        raise NotProven("the synthetic corpus has no test videos")
    limits = ServedLimits()
    decoder = clip_decoder("dali", FRAME_SIZE, FRAME_SIZE, limits, device="gpu")
    gpu = decoder.decode(videos)
    cpu = clip_decoder("pyav", FRAME_SIZE, FRAME_SIZE, limits).decode(videos)
    # A dali-gpu decoder that cannot use NVDEC (a container without the `video` driver capability, say) hands its
    # uploads to PyAV: comparing those with PyAV would prove nothing about NVDEC.
    fallbacks = getattr(decoder, "fallbacks", None)
    if fallbacks is None or fallbacks.total:
        reasons = dict(fallbacks.counts) if fallbacks is not None else "a decoder other than DALI's was built"
        raise NotProven(f"the dali-gpu decoder handed uploads to PyAV: {reasons}")
    worst = 0
    for video, a, b in zip(videos, gpu, cpu, strict=True):
        if isinstance(a, Exception) or isinstance(b, Exception):
            raise AssertionError(f"{video.name}: NVDEC {a!r}, PyAV {b!r}")
        if a.frames.shape != b.frames.shape:
            raise AssertionError(f"{video.name}: NVDEC gave {a.frames.shape}, PyAV {b.frames.shape}")
        worst = max(worst, int(np.abs(a.frames.astype(int) - b.frames.astype(int)).max()))
    if worst > DECODER_TOLERANCE_GREY:
        raise AssertionError(f"NVDEC and PyAV differ by {worst} grey levels, over the tolerance of "
                             f"{DECODER_TOLERANCE_GREY}")
    return {"videos": len(videos), "max_difference_grey_levels": worst, "tolerance": DECODER_TOLERANCE_GREY}
