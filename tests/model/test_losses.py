"""VAC's losses against small cases computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from qslr.model.losses import VACLoss
from qslr.model.network import ModelOutput

P1, P2 = [0.5, 0.3, 0.2], [0.6, 0.1, 0.3]  # per-frame probabilities of (blank, a, b)


def output(sequence: torch.Tensor, conv: torch.Tensor, lengths) -> ModelOutput:
    batch, steps = sequence.shape[:2]
    return ModelOutput(torch.zeros(batch, 1, 1), torch.zeros(batch, steps, 1), conv, sequence,
                       torch.tensor(lengths))


def two_frame_logits() -> torch.Tensor:
    # Log-probabilities are their own log-softmax, so these logits stand for exactly P1 then P2.
    return torch.log(torch.tensor([[P1, P2], [P1, P2]]))


def test_ctc_is_summed_per_sequence_then_averaged_over_the_batch():
    # Sample 1, target "a" in 2 frames: paths aa, _a, a_ -> 0.3*0.1 + 0.5*0.1 + 0.3*0.6 = 0.26.
    # Sample 2, target "a b": only path ab -> 0.3*0.3 = 0.09.
    expected = (-math.log(0.26) - math.log(0.09)) / 2
    logits = two_frame_logits()
    result = VACLoss({"SeqCTC": 1.0})(output(logits, logits, [2, 2]), torch.tensor([1, 1, 2]), torch.tensor([1, 2]))
    assert result.terms["SeqCTC"].item() == pytest.approx(expected, rel=1e-5)
    assert result.total.item() == pytest.approx(expected, rel=1e-5)
    # Not PyTorch's "mean", which would also divide each sample by its target length.
    assert expected != pytest.approx((-math.log(0.26) - math.log(0.09) / 2) / 2, rel=1e-3)


def test_weights_combine_the_terms():
    logits = two_frame_logits()
    conv = logits.flip(-1)
    targets, target_lengths = torch.tensor([1, 1, 2]), torch.tensor([1, 2])
    single = {name: VACLoss({name: 1.0})(output(logits, conv, [2, 2]), targets, target_lengths).total.item()
              for name in ("SeqCTC", "ConvCTC", "Dist")}
    both = VACLoss({"SeqCTC": 1.0, "ConvCTC": 0.5, "Dist": 25.0})(output(logits, conv, [2, 2]), targets,
                                                                  target_lengths)
    assert both.total.item() == pytest.approx(single["SeqCTC"] + 0.5 * single["ConvCTC"] + 25 * single["Dist"],
                                              rel=1e-5)
    assert set(both.terms) == {"SeqCTC", "ConvCTC", "Dist"}


def softmax(values):
    exps = [math.exp(v) for v in values]
    return [e / sum(exps) for e in exps]


def test_distillation_drops_the_blank_counts_every_row_and_scales_by_t_squared():
    temperature = 2.0
    student = torch.tensor([[[5.0, 1.0, 2.0], [0.0, 0.5, -1.0]]])  # (B=1, T'=2, V=3)
    teacher = torch.tensor([[[-3.0, 2.0, 0.0], [9.0, -1.0, 1.0]]])
    rows = []
    for s, t in zip(student[0].tolist(), teacher[0].tolist(), strict=True):
        p, q = softmax([v / temperature for v in t[1:]]), softmax([v / temperature for v in s[1:]])
        rows.append(sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q, strict=True)))
    # Both rows count, even though the sample's valid length is 1: the original does not mask padding.
    expected = sum(rows) / 2 * temperature**2
    result = VACLoss({"Dist": 1.0}, temperature)(output(teacher, student, [1]), torch.tensor([1]), torch.tensor([1]))
    assert result.total.item() == pytest.approx(expected, rel=1e-5)


def test_no_gradient_reaches_the_teacher_through_distillation():
    sequence = torch.randn(2, 3, 4, requires_grad=True)
    conv = torch.randn(2, 3, 4, requires_grad=True)
    VACLoss({"Dist": 1.0})(output(sequence, conv, [3, 2]), torch.tensor([1, 2]), torch.tensor([1, 1])).total.backward()
    assert sequence.grad is None and conv.grad is not None and conv.grad.abs().sum() > 0


def test_non_finite_loss_names_the_videos():
    logits = torch.randn(2, 2, 3)
    # The second sample's target (3 glosses) cannot fit in 2 steps: its CTC is infinite.
    result = VACLoss({"SeqCTC": 1.0})(output(logits, logits, [2, 2]), torch.tensor([1, 1, 2, 1]),
                                      torch.tensor([1, 3]))
    assert not result.is_finite()
    assert result.nonfinite_ids(["vid-a", "vid-b"]) == ["vid-b"]


@pytest.mark.parametrize("weights, message", [({"CTC": 1.0}, "unknown loss terms"), ({"SeqCTC": 0}, "zero")])
def test_bad_weights(weights, message):
    with pytest.raises(ValueError, match=message):
        VACLoss(weights)


def test_the_lifting_terms_are_the_network_s_own_weighted_by_the_config():
    logits = two_frame_logits()
    lifting = {"Cu": torch.tensor(300.0), "Cp": torch.tensor(800.0)}
    out = ModelOutput(torch.zeros(2, 1, 1), torch.zeros(2, 2, 1), logits, logits, torch.tensor([2, 2]), lifting)
    targets, target_lengths = torch.tensor([1, 1, 2]), torch.tensor([1, 2])
    ctc = VACLoss({"SeqCTC": 1.0})(out, targets, target_lengths).total.item()
    result = VACLoss({"SeqCTC": 1.0, "Cu": 5e-4, "Cp": 5e-4})(out, targets, target_lengths)
    assert result.terms["Cu"].item() == 300.0 and result.terms["Cp"].item() == 800.0
    assert result.total.item() == pytest.approx(ctc + 5e-4 * 1100, rel=1e-6)
    # A network without lifting pools has no such terms: asking for them is an error, not a silent zero.
    with pytest.raises(ValueError, match="loss term Cu comes from CorrNet\\+'s lifting pools"):
        VACLoss({"SeqCTC": 1.0, "Cu": 5e-4})(output(logits, logits, [2, 2]), targets, target_lengths)
