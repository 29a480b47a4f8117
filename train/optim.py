"""Optimiser and learning-rate schedule from the config's optim section."""

from __future__ import annotations

import torch
from torch import nn

from qslr.train.config import OptimizerConfig


def trainable_parameters(model: nn.Module, freeze_bn_affine: bool) -> list[nn.Parameter]:
    if freeze_bn_affine:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                for parameter in module.parameters(recurse=False):
                    parameter.requires_grad_(False)
    return [p for p in model.parameters() if p.requires_grad]


def build_optimizer(model: nn.Module, config: OptimizerConfig) -> torch.optim.Optimizer:
    parameters = trainable_parameters(model, config.freeze_bn_affine)
    if config.name == "adam":  # coupled L2, as the original
        return torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)
    if config.name == "adamw":
        return torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(parameters, lr=config.lr, momentum=0.9, nesterov=True, weight_decay=config.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, config: OptimizerConfig) -> torch.optim.lr_scheduler.MultiStepLR:
    """Stepped once per epoch, as the original."""
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=config.milestones, gamma=config.gamma)
