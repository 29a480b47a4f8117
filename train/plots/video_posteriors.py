"""One video file through a trained checkpoint, prepared as evaluation prepares its clips: the decoded frames,
the CTC posteriors of every output step (the BiLSTM branch, the one that is scored), and the glosses the
decoder recognises with the output steps each one spans."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from qslr.model.decoding import CTCDecoder, Hypothesis
from qslr.model.decoding_defaults import BEAM, GREEDY
from qslr.pipelines.augmentation import ClipSettings, apply_plan, plan_clip
from qslr.pipelines.temporal_padding import stride
from qslr.pipelines.video_io import read_video, resize_frames
from qslr.train.checkpointing import TrainedModel


@dataclass(frozen=True)
class GlossSpan:
    gloss: str
    id: int
    start: int  # first output step labelled with the gloss on the decoded path
    end: int  # one past its last


@dataclass
class VideoPosteriors:
    frames: np.ndarray  # uint8 (T, H, W, 3), the video as decoded (before resizing to the model's frame size)
    fps: float  # 0.0 where the container states none
    posteriors: np.ndarray  # float32 (T', classes): each output step's probabilities; column 0 is the blank
    stride: int  # frames per output step
    hypothesis: Hypothesis
    spans: list[GlossSpan]

    @property
    def recognised_ids(self) -> list[int]:
        """The recognised gloss ids, each once, in the order they first occur."""
        return list(dict.fromkeys(self.hypothesis.ids))


def checkpoint_decoder(trained: TrainedModel, beam_size: int | None = None) -> CTCDecoder:
    """The decoder of the checkpoint's config, with another beam width if given (0: greedy)."""
    settings = trained.config.decode.search()
    if beam_size == 0:
        settings["method"] = GREEDY
    elif beam_size is not None:
        settings.update(method=BEAM, beam_size=beam_size)
    return CTCDecoder(trained.vocab, **settings)


@torch.no_grad()
def video_posteriors(trained: TrainedModel, video: str | Path, decoder: CTCDecoder,
                     device: str | torch.device = "cpu") -> VideoPosteriors:
    frames, fps = read_video(video)
    spec = trained.input
    height, width = (spec.height, spec.width) if spec.height and spec.width else frames.shape[1:3]
    resized = resize_frames(frames, height, width)
    # The evaluation plan (centre crop, the replicate padding) as the loaders execute it; it draws nothing random.
    plan = plan_clip(len(resized), height, width, ClipSettings(crop_size=spec.crop_size, kernels=spec.kernels),
                     train=False, rng=np.random.default_rng())
    clip = torch.from_numpy(apply_plan(resized, plan, spec.crop_size))[None].to(device)
    model = trained.model.to(device).eval()
    output = model(clip, torch.tensor([plan.length], device=device))
    log_probs = output.sequence_logits[0, :int(output.lengths[0])].float().log_softmax(-1).cpu()
    hypothesis = decoder.decode(log_probs[None], [len(log_probs)])[0]
    return VideoPosteriors(frames, fps, log_probs.exp().numpy(), stride(spec.kernels), hypothesis,
                           hypothesis_segments(hypothesis))


def hypothesis_segments(hypothesis: Hypothesis) -> list[GlossSpan]:
    """Each recognised gloss from its start step to its last (the decoder's path gives both), end exclusive."""
    return [GlossSpan(gloss, gloss_id, start, last + 1) for gloss, gloss_id, start, last in
            zip(hypothesis.glosses, hypothesis.ids, hypothesis.steps, hypothesis.ends, strict=True)]
