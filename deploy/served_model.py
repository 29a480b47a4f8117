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
    def __init__(self, model: SLRModel, crop_size: int, top_k: int | None = None,
                 frame_size: tuple[int, int] | None = None):
        super().__init__()
        self.model = model.eval()
        self.crop_size = crop_size
        # Given for an export: constant crop offsets keep the graph's shapes static.
        self.frame_size = frame_size
        self.top_k = top_k
        kernels = model.temporal.kernels
        self.stride = stride(kernels)
        self.left, self.margin = padding_for(kernels)

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor):
        """frames (B, T, H, W, 3) uint8, lengths (B,) int64 -> log_probs (B, T', V), output_lengths (B,)."""
        batch, time = frames.shape[0], frames.shape[1]
        height, width = self.frame_size or (int(frames.shape[2]), int(frames.shape[3]))
        top, left = (height - self.crop_size) // 2, (width - self.crop_size) // 2
        clips = frames[:, :, top:top + self.crop_size, left:left + self.crop_size, :]
        # Gather the padded clip: step t shows frame clamp(t - left, 0, length - 1).
        # As a tensor of the input's shape, so that the exported graph computes it per call (an integer Div,
        # not the Mod of a floor division).
        time = torch._shape_as_tensor(frames)[1]
        padded_time = torch.div(time + self.stride - 1, self.stride, rounding_mode="trunc") * self.stride + self.margin
        steps = torch.arange(padded_time, device=frames.device)[None, :] - self.left
        index = torch.minimum(steps.clamp(min=0), (lengths - 1).clamp(min=0)[:, None])
        # One Gather of whole frames over (batch x time), rather than an element-wise gather with an index
        # as large as the video, which dominated onnxruntime's time.
        flat = (index + torch.arange(batch, device=frames.device)[:, None] * time).reshape(-1)
        clips = torch.index_select(clips.reshape(-1, self.crop_size, self.crop_size, 3), 0, flat)
        clips = clips.reshape(batch, -1, self.crop_size, self.crop_size, 3)
        videos = clips.permute(0, 1, 4, 2, 3).float() / 127.5 - 1.0
        padded_lengths = torch.div(lengths + self.stride - 1, self.stride, rounding_mode="trunc") * self.stride \
            + self.margin
        # In eval mode BatchNorm uses its running statistics, so encoding every frame and zeroing those past
        # each clip equals encoding only the valid ones, without the data-dependent shapes of a boolean mask.
        # A reshape to the constant crop size keeps the frame encoder's spatial shapes static in the graph.
        images = videos.reshape(-1, 3, self.crop_size, self.crop_size)
        features = self.model.frame_encoder(images)
        features = features.reshape(batch, -1, features.shape[-1])
        valid = torch.arange(padded_time, device=frames.device)[None, :] < padded_lengths[:, None]
        output = self.model.forward_features(features * valid[:, :, None].to(features.dtype), padded_lengths)
        log_probs = output.sequence_logits.float().log_softmax(-1)
        if self.top_k:
            top_values, top_ids = log_probs.topk(self.top_k, dim=-1)
            return log_probs, output.lengths, top_values, top_ids
        return log_probs, output.lengths


def fix_adaptive_pools(model: nn.Module, crop_size: int) -> None:
    """Replace adaptive average pools by fixed ones for the known crop size.

    The ONNX exporter cannot size an adaptive pool whose input shape it does not know statically, and once the
    crop is fixed the pools are fixed too: identities when the map already has the target size.
    """
    encoder = model.frame_encoder if hasattr(model, "frame_encoder") else model
    sizes: dict[str, tuple[int, int]] = {}
    hooks = [module.register_forward_hook(lambda m, args, out, name=name: sizes.__setitem__(name, args[0].shape[-2:]))
             for name, module in encoder.named_modules() if isinstance(module, nn.AdaptiveAvgPool2d)]
    with torch.no_grad():
        encoder(torch.zeros(1, 3, crop_size, crop_size))
    for hook in hooks:
        hook.remove()
    for name, (height, width) in sizes.items():
        pool = encoder.get_submodule(name)
        out = pool.output_size if isinstance(pool.output_size, tuple) else (pool.output_size, pool.output_size)
        if height % out[0] or width % out[1]:
            continue  # not a whole-window pooling: left adaptive
        kernel = (height // out[0], width // out[1])
        parent_name, _, attribute = name.rpartition(".")
        parent = encoder.get_submodule(parent_name) if parent_name else encoder
        setattr(parent, attribute, nn.Identity() if kernel == (1, 1) else nn.AvgPool2d(kernel, kernel))
