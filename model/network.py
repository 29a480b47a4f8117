"""The VAC/SMKD network (and CorrNet's, CorrNet+'s): frame encoder -> TemporalConv -> BiLSTM, with a classifier on
each branch."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from qslr.model.classifier import make_classifier
from qslr.model.encoder_registry import build_frame_encoder
from qslr.model.sequence_model import BiLSTM
from qslr.model.temporal_conv import TemporalConv


@dataclass
class ModelOutput:
    framewise: torch.Tensor  # (B, T, D) frame features, zero past each sample's length
    visual: torch.Tensor  # (B, T', H) TemporalConv features
    conv_logits: torch.Tensor  # (B, T', V) the visual branch's classifier
    sequence_logits: torch.Tensor  # (B, T', V) the BiLSTM branch's classifier: the recognition output
    lengths: torch.Tensor  # (B,) int64 valid steps T'_i
    # Loss terms the network computes itself, by name: CorrNet+'s lifting pools' Cu and Cp (model/lifting_pool.py).
    lifting: dict[str, torch.Tensor] = field(default_factory=dict)


class SLRModel(nn.Module):
    def __init__(self, num_classes: int, frame_encoder: nn.Module, temporal: TemporalConv, sequence: BiLSTM,
                 weight_norm: bool = False, shared: bool = False):
        super().__init__()
        self.num_classes = num_classes
        self.frame_encoder = frame_encoder
        self.temporal = temporal
        self.sequence = sequence
        self.classifier = make_classifier(sequence.out_dim, num_classes, weight_norm)
        if shared and temporal.out_dim != sequence.out_dim:
            raise ValueError(f"a shared classifier needs equal widths (temporal {temporal.out_dim}, "
                             f"sequence {sequence.out_dim})")
        self.conv_classifier = self.classifier if shared else make_classifier(temporal.out_dim, num_classes,
                                                                              weight_norm)

    def encode_frames(self, videos: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, H, W) -> (B, T, D), running the CNN only on each sample's first ``lengths[i]`` frames,
        so that BatchNorm statistics never see another sample's padding. A clip-aware encoder (CorrNet's) takes
        the clips whole, with their lengths, and keeps to each clip's own frames itself."""
        batch, time = videos.shape[:2]
        valid = torch.arange(time, device=videos.device)[None, :] < lengths.to(videos.device)[:, None]
        if getattr(self.frame_encoder, "clip_aware", False):
            features = self.frame_encoder(videos.flatten(0, 1), lengths.to(videos.device))
            return features.reshape(batch, time, -1) * valid[:, :, None].to(features.dtype)
        features = self.frame_encoder(videos[valid])
        framewise = features.new_zeros(batch, time, features.shape[-1])
        framewise[valid] = features
        return framewise

    def forward(self, videos: torch.Tensor, lengths: torch.Tensor) -> ModelOutput:
        return self.forward_features(self.encode_frames(videos, lengths), lengths)

    def forward_features(self, framewise: torch.Tensor, lengths: torch.Tensor) -> ModelOutput:
        """From frame features (B, T, D), e.g. ones saved by ``qslr features``."""
        visual, out_lengths, lifting = self.temporal(framewise.transpose(1, 2), lengths)
        visual = visual.transpose(1, 2)
        contextual = self.sequence(visual, out_lengths)
        return ModelOutput(framewise, visual, self.conv_classifier(visual), self.classifier(contextual), out_lengths,
                           lifting)


def build_model(num_classes: int, frame_encoder: dict, temporal: dict, sequence: dict, classifier: dict) -> SLRModel:
    """Build from the config's model sections (each a dict of its constructor's keyword arguments)."""
    encoder = build_frame_encoder(**frame_encoder)
    temporal_conv = TemporalConv(encoder.out_dim, **temporal)
    return SLRModel(num_classes, encoder, temporal_conv, BiLSTM(temporal_conv.out_dim, **sequence), **classifier)
