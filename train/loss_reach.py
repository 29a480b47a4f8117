"""Which parameters the configured loss reaches, so that DDP is told of those it never will.

DDP waits for a gradient of every parameter before it reduces a bucket. A preset whose loss terms leave a
module out (VAC's baseline: SeqCTC alone, with the convolutional branch's own classifier still built) makes
every rank fail at the second step ("Expected to have finished reduction in the prior iteration"). The
trainer leaves the parameters this probe finds out of DDP.
"""

from __future__ import annotations

import torch

from qslr.model.losses import VACLoss
from qslr.model.network import SLRModel


def parameters_without_loss(model: SLRModel, loss: VACLoss, frames: int = 64) -> list[str]:
    """Names of the trainable parameters that no gradient of ``loss`` reaches.

    One forward of the heads on zero frame features, in eval mode so that no BatchNorm statistic moves; the
    frame encoder is left out because every term is computed from its features. Which parameters a term
    reaches does not depend on the values, only on the graph.
    """
    was_training = model.training
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad and
             not name.startswith("frame_encoder.")]
    parameter = next(model.parameters())
    features = torch.zeros(1, frames, model.frame_encoder.out_dim, device=parameter.device, dtype=parameter.dtype)
    lengths = torch.tensor([frames], device=parameter.device)
    model.eval()
    try:
        with torch.enable_grad():
            output = model.forward_features(features, lengths)
            one = torch.ones(1, dtype=torch.long, device=parameter.device)  # one target gloss, one long
            total = loss(output, one, one).total
            grads = torch.autograd.grad(total, [p for _, p in named], allow_unused=True)
    finally:
        model.train(was_training)
    return [name for (name, _), grad in zip(named, grads, strict=True) if grad is None]
