"""The served signature: raw uint8 frames and their counts in, log-probabilities and their lengths out.

Everything the loaders do at evaluation time happens inside the graph, so a client sends decoded frames
as they are: the centre crop, the scaling to [-1, 1], and the original's replicate padding (6 copies of
the first frame, the last frame repeated up to a multiple of the temporal stride plus the margin).

The precision is stated here, not guessed by a converter or a compiler's autocast pass: at ``fp16`` the frame
encoder, the temporal convolution and the classifier hold and compute half-precision tensors, while the
BiLSTM keeps its float32 weights and recurrence (as in training), CorrNet+'s lifting pools take their instance
normalisation's statistics in float32, the length and index arithmetic stays integer, and the log-probabilities leave
in float32. Every graph exported from it (ONNX, torch.export) says
so in its own types.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from qslr.model.classifier import NormLinear
from qslr.model.network import SLRModel
from qslr.model.unpacked_bilstm import bilstm_unpacked
from qslr.pipelines.augmentation import PIXEL_OFFSET, PIXEL_SCALE
from qslr.pipelines.temporal_padding import padding_for, stride

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16}


class ServedModel(nn.Module):
    def __init__(self, model: SLRModel, crop_size: int, top_k: int | None = None,
                 frame_size: tuple[int, int] | None = None, precision: str = "fp32",
                 pixel_offset: float = PIXEL_OFFSET, pixel_scale: float = PIXEL_SCALE):
        super().__init__()
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
        self.precision = precision
        self.compute_dtype = PRECISIONS[precision]
        self.model = model.eval()
        if isinstance(model.classifier, NormLinear):
            # Its class vectors are normalised once here, in float32, rather than on every call (and in half
            # precision) in the graph.
            model.classifier = _fixed_linear(model.classifier)
        # The parts that run in the served precision; model.sequence (the BiLSTM) is not among them.
        for part in (model.frame_encoder, model.temporal, model.classifier):
            part.to(self.compute_dtype)
        layers = model.temporal.temporal_conv
        for index, layer in enumerate(layers):
            if isinstance(layer, nn.MaxPool1d):
                layers[index] = _MaxPoolOverTime(layer)
        self.crop_size = crop_size
        self.pixel_offset, self.pixel_scale = pixel_offset, pixel_scale
        # Given for an export: constant crop offsets keep the graph's shapes static.
        self.frame_size = frame_size
        self.top_k = top_k
        kernels = model.temporal.kernels
        self.stride = stride(kernels)
        self.left, self.margin = padding_for(kernels)

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor):
        """frames (B, T, H, W, 3) uint8, lengths (B,) int64 -> log_probs (B, T', V), output_lengths (B,)."""
        images = _cast(self.padded_images(frames, lengths), self.compute_dtype)
        padded_lengths = _round_up(lengths, self.stride) + self.margin
        # In eval mode BatchNorm uses its running statistics, so encoding every frame and zeroing those past
        # each clip equals encoding only the valid ones, without the data-dependent shapes of a boolean mask.
        encoder = self.model.frame_encoder
        # A clip-aware encoder (CorrNet's) is told where each clip's frames end; the rest are per frame.
        features = encoder(images, padded_lengths) if getattr(encoder, "clip_aware", False) else encoder(images)
        features = features.reshape(lengths.shape[0], -1, features.shape[-1])
        valid = torch.arange(features.shape[1], device=frames.device)[None, :] < padded_lengths[:, None]
        features = features * valid[:, :, None].to(features.dtype)
        visual, steps = self.temporal_features(features.transpose(1, 2), padded_lengths)
        # The trained BiLSTM packs its sequences, which neither torch.export nor TensorRT can take with a
        # dynamic time axis; this form with the same weights equals it.
        visual = _cast(visual, torch.float32).transpose(1, 2)
        contextual = self.model.sequence.add_input(bilstm_unpacked(self.model.sequence.rnn, visual, steps), visual)
        log_probs = self.model.classifier(_cast(contextual, self.compute_dtype)).float().log_softmax(-1)
        if self.top_k:
            top_values, top_ids = log_probs.topk(self.top_k, dim=-1)
            return log_probs, steps, top_values, top_ids
        return log_probs, steps

    def temporal_features(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The trained TemporalConv (its max-poolings run over (1, time), `_MaxPoolOverTime`)."""
        visual, steps, _ = self.model.temporal(features, lengths)
        return visual, steps

    def padded_images(self, frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T, H, W, 3) uint8 -> (B * padded T, 3, crop, crop) in [-1, 1]: each clip centre-cropped and
        padded, step t showing frame clamp(t - left, 0, length - 1)."""
        # TensorRT's ONNX parser takes a uint8 network input only straight into a Cast, and its Slice and
        # Gather refuse uint8: the crop and the gather run on floats, and even the shape is read after the Cast.
        pixels = frames.float()
        batch, time = pixels.shape[0], pixels.shape[1]
        height, width = self.frame_size or (int(pixels.shape[2]), int(pixels.shape[3]))
        top, left = (height - self.crop_size) // 2, (width - self.crop_size) // 2
        clips = pixels[:, :, top:top + self.crop_size, left:left + self.crop_size, :]
        steps = torch.arange(_round_up(time, self.stride) + self.margin, device=frames.device)[None, :] - self.left
        # Max and Min rather than a clamp: TensorRT's Clip takes floats only.
        zero = torch.zeros((), dtype=steps.dtype, device=frames.device)
        index = torch.minimum(torch.maximum(steps, zero), torch.maximum(lengths - 1, zero)[:, None])
        # One Gather of whole frames over (batch x time), rather than an element-wise gather with an index
        # as large as the video, which dominated onnxruntime's time.
        flat = (index + torch.arange(batch, device=frames.device)[:, None] * time).reshape(-1)
        # A reshape to the constant crop size keeps the frame encoder's spatial shapes static in the graph.
        clips = torch.index_select(clips.reshape(-1, self.crop_size, self.crop_size, 3), 0, flat)
        return (clips.permute(0, 3, 1, 2) - self.pixel_offset) / self.pixel_scale


class _MaxPoolOverTime(nn.Module):
    """A MaxPool1d run as a 2-D one over (1, time): the same values, but torch.export fixes the time axis of a 1-D
    max-pooling (not of a 2-D one), and TensorRT pools in 2-D."""

    def __init__(self, pool: nn.MaxPool1d):
        super().__init__()
        self.kernel, self.stride, self.padding, self.dilation = (
            _single(v) for v in (pool.kernel_size, pool.stride, pool.padding, pool.dilation))
        self.ceil_mode = pool.ceil_mode

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(features.unsqueeze(2), (1, self.kernel), (1, self.stride), (0, self.padding),
                            (1, self.dilation), self.ceil_mode).squeeze(2)


def _fixed_linear(classifier: NormLinear) -> nn.Linear:
    """A bias-free Linear whose weight is the NormLinear's weight normalised per class: the same logits."""
    weight = F.normalize(classifier.weight.detach().float(), dim=0).t()
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=False, device=weight.device)
    linear.weight = nn.Parameter(weight.contiguous(), requires_grad=False)
    return linear


def _cast(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``x`` in ``dtype``; no cast at all where it is already, so an fp32 graph carries no Cast to float."""
    return x if x.dtype == dtype else x.to(dtype)


def _single(value: int | tuple[int]) -> int:
    return value if isinstance(value, int) else value[0]


def _round_up(count, multiple: int):
    """``count`` rounded up to a multiple of ``multiple``, for a size or a tensor of sizes.

    The ONNX tracer hands sizes over as tensors: an integer Div keeps them computed per call (a floor
    division would add a Mod). torch.export hands over symbolic ints, which Python's arithmetic keeps
    symbolic.
    """
    if isinstance(count, torch.Tensor):
        return torch.div(count + multiple - 1, multiple, rounding_mode="trunc") * multiple
    return (count + multiple - 1) // multiple * multiple


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
        encoder(torch.zeros(1, 3, crop_size, crop_size, dtype=next(encoder.parameters()).dtype))
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
