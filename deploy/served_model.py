"""The served signature: raw uint8 frames and their counts in, log-probabilities and their lengths out.

Everything the loaders do at evaluation time happens inside the graph, so a client sends decoded frames
as they are: the centre crop, the scaling to [-1, 1], and the original's replicate padding (6 copies of
the first frame, the last frame repeated up to a multiple of the temporal stride plus the margin).
"""

from __future__ import annotations

import torch
from torch import nn

from model.network import SLRModel
from pipelines.temporal_padding import padding_for, stride


class ServedModel(nn.Module):
    def __init__(self, model: SLRModel, crop_size: int, top_k: int | None = None):
        super().__init__()
        self.model = model.eval()
        self.crop_size = crop_size
        self.top_k = top_k
        kernels = model.temporal.kernels
        self.stride = stride(kernels)
        self.left, self.margin = padding_for(kernels)

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor):
        """frames (B, T, H, W, 3) uint8, lengths (B,) int64 -> log_probs (B, T', V), output_lengths (B,)."""
        batch, time, height, width = frames.shape[0], frames.shape[1], frames.shape[2], frames.shape[3]
        top, left = (height - self.crop_size) // 2, (width - self.crop_size) // 2
        clips = frames[:, :, top:top + self.crop_size, left:left + self.crop_size, :]
        # Gather the padded clip: step t shows frame clamp(t - left, 0, length - 1).
        padded_time = (time + self.stride - 1) // self.stride * self.stride + self.margin
        steps = torch.arange(padded_time, device=frames.device)[None, :] - self.left
        index = torch.minimum(steps.clamp(min=0), (lengths - 1).clamp(min=0)[:, None])
        index = index[:, :, None, None, None].expand(batch, padded_time, self.crop_size, self.crop_size, 3)
        clips = torch.gather(clips, 1, index)
        videos = clips.permute(0, 1, 4, 2, 3).float() / 127.5 - 1.0
        padded_lengths = (lengths + self.stride - 1) // self.stride * self.stride + self.margin
        # In eval mode BatchNorm uses its running statistics, so encoding every frame and zeroing those past
        # each clip equals encoding only the valid ones, without the data-dependent shapes of a boolean mask.
        features = self.model.frame_encoder(videos.flatten(0, 1)).unflatten(0, (batch, padded_time))
        valid = torch.arange(padded_time, device=frames.device)[None, :] < padded_lengths[:, None]
        output = self.model.forward_features(features * valid[:, :, None].to(features.dtype), padded_lengths)
        log_probs = output.sequence_logits.float().log_softmax(-1)
        if self.top_k:
            top_values, top_ids = log_probs.topk(self.top_k, dim=-1)
            return log_probs, output.lengths, top_values, top_ids
        return log_probs, output.lengths
