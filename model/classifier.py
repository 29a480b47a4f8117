"""Gloss classifiers: a plain Linear layer, or SMKD's weight-normalised one (no bias)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class NormLinear(nn.Module):
    """logits = x @ W / ||W||_column: every class vector has unit norm, the features are left as they are.

    The weight is stored as (in_features, out_features), transposed against nn.Linear, as the original
    does; its checkpoints show that shape.
    """

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        nn.init.xavier_uniform_(self.weight, gain=nn.init.calculate_gain("relu"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ F.normalize(self.weight, dim=0)


def make_classifier(in_features: int, num_classes: int, weight_norm: bool) -> nn.Module:
    return NormLinear(in_features, num_classes) if weight_norm else nn.Linear(in_features, num_classes)
