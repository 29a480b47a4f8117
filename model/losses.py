"""VAC's losses: SeqCTC, ConvCTC (visual enhancement) and Dist (visual alignment), and CorrNet+'s lifting terms Cu
and Cp where the network has lifting pools, weighted by the config."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from qslr.model.loss_terms import CONV_CTC, DIST, LIFTING, SEQ_CTC, TERMS
from qslr.model.network import ModelOutput
from qslr.pipelines.prepared import BLANK_ID as BLANK


def ctc_per_sample(logits: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor,
                   target_lengths: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of each sample's target (B,), summed over its frames: no length division."""
    log_probs = logits.float().log_softmax(-1).transpose(0, 1)  # (T', B, V)
    return F.ctc_loss(log_probs, targets, lengths, target_lengths, blank=BLANK, reduction="none",
                      zero_infinity=False)


def distillation(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) at ``temperature`` over the non-blank classes, times temperature squared.

    As in the original, every (step, sample) row of the padded batch counts, and the sum is divided by
    their number (T' x B); the teacher is detached so no gradient reaches the BiLSTM through this term.
    """
    classes = student_logits.shape[-1]
    student = student_logits[..., BLANK + 1:].float().reshape(-1, classes - 1) / temperature
    teacher = teacher_logits.detach()[..., BLANK + 1:].float().reshape(-1, classes - 1) / temperature
    kl = F.kl_div(student.log_softmax(-1), teacher.log_softmax(-1), reduction="batchmean", log_target=True)
    return kl * temperature**2


@dataclass
class LossResult:
    total: torch.Tensor
    terms: dict[str, torch.Tensor]  # each weighted term's unweighted value
    per_sample: torch.Tensor  # (B,) the CTC terms of each sample, to name the culprits of a non-finite loss

    def is_finite(self) -> bool:
        return bool(torch.isfinite(self.total))

    def nonfinite_ids(self, ids: Sequence[str]) -> list[str]:
        bad = ~torch.isfinite(self.per_sample)
        return [ids[i] for i in bad.nonzero().flatten().tolist()] or list(ids)


class VACLoss(nn.Module):
    def __init__(self, weights: Mapping[str, float], temperature: float = 8.0):
        super().__init__()
        unknown = set(weights) - set(TERMS)
        if unknown:
            raise ValueError(f"unknown loss terms {sorted(unknown)} (known: {', '.join(TERMS)})")
        self.weights = {name: float(w) for name, w in weights.items() if w != 0}
        if not self.weights:
            raise ValueError("every loss weight is zero")
        self.temperature = temperature

    def forward(self, output: ModelOutput, targets: torch.Tensor, target_lengths: torch.Tensor) -> LossResult:
        """``targets`` are the batch's gloss ids concatenated (1-D), as CTC takes them."""
        terms: dict[str, torch.Tensor] = {}
        per_sample = torch.zeros(len(output.lengths), device=output.sequence_logits.device)
        for name, logits in ((SEQ_CTC, output.sequence_logits), (CONV_CTC, output.conv_logits)):
            if name in self.weights:
                losses = ctc_per_sample(logits, output.lengths, targets, target_lengths)
                per_sample = per_sample + losses
                terms[name] = losses.mean()
        if DIST in self.weights:
            terms[DIST] = distillation(output.conv_logits, output.sequence_logits, self.temperature)
        for name in LIFTING:
            if name in self.weights:
                if name not in output.lifting:
                    raise ValueError(f"loss term {name} comes from CorrNet+'s lifting pools and this network has "
                                     f"none: set model.temporal.pooling to lift, or the weight of {name} to 0")
                terms[name] = output.lifting[name]
        total = sum(self.weights[name] * value for name, value in terms.items())
        return LossResult(total, terms, per_sample)
