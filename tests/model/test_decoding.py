"""CTC decoding: collapse rules, greedy equals beam on peaky outputs, the optional ctcdecode backend."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from model.decoding import CTCDecoder, collapse_path

VOCAB = {f"G{i}": i for i in range(1, 30)}


@pytest.mark.parametrize("path, ids, frames", [
    ([0, 0, 0], [], []),
    ([3, 3, 0, 5], [3, 5], [0, 3]),
    ([0, 3, 0, 3, 4], [3, 4], [1, 4]),  # a gloss repeated across a blank is merged, as the original does
    ([2, 2, 2, 7, 7, 2], [2, 7, 2], [0, 3, 5]),
    ([5], [5], [0]),
])
def test_collapse(path, ids, frames):
    assert collapse_path(path) == (ids, frames)


def peaky(batch: int, steps: int, classes: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1, (batch, steps, classes)).astype(np.float32)
    logits[:, :, 0] += 10
    for b, t in zip(*np.nonzero(rng.random((batch, steps)) < 0.35), strict=True):
        logits[b, t, rng.integers(1, classes)] += 20
    return torch.from_numpy(logits).log_softmax(-1)


@pytest.mark.parametrize("seed", range(5))
def test_greedy_equals_beam_on_peaky_outputs(seed):
    log_probs = peaky(8, 40, len(VOCAB) + 1, seed)
    lengths = torch.tensor([40, 39, 33, 20, 12, 7, 1, 0])
    greedy = CTCDecoder(VOCAB, "greedy").decode(log_probs, lengths)
    beam = CTCDecoder(VOCAB, "beam").decode(log_probs, lengths)
    for g, b in zip(greedy, beam, strict=True):
        assert (g.glosses, g.frames) == (b.glosses, b.frames)
        # The beam sums every path of its labelling; greedy scores the single best path.
        assert b.score >= g.score - 1e-4
    assert greedy[-1].glosses == [] and all(len(g.ids) <= n for g, n in zip(greedy, lengths.tolist(), strict=True))


def test_beam_finds_a_better_labelling_than_greedy_when_paths_split():
    # Frame-wise, blank wins each step (0.6), but "a" over both frames has 1 - 0.6^2 = 0.64 > 0.36.
    probs = torch.tensor([[[0.6, 0.4, 0.0], [0.6, 0.4, 0.0]]]) + 1e-9
    log_probs = probs.log()
    vocab = {"A": 1, "B": 2}
    assert CTCDecoder(vocab, "greedy").decode(log_probs, [2])[0].glosses == []
    assert CTCDecoder(vocab, "beam").decode(log_probs, [2])[0].glosses == ["A"]


def test_lengths_cut_the_decoding():
    log_probs = peaky(1, 30, len(VOCAB) + 1, 7)
    full = CTCDecoder(VOCAB, "beam").decode(log_probs, [30])[0]
    cut = CTCDecoder(VOCAB, "beam").decode(log_probs, [10])[0]
    assert all(f < 10 for f in cut.frames) and cut.glosses == full.glosses[: len(cut.glosses)]


def test_bad_inputs_are_refused():
    decoder = CTCDecoder(VOCAB, "greedy")
    with pytest.raises(ValueError, match="expected log-probabilities"):
        decoder.decode(np.zeros((1, 5, 7)), [5])
    with pytest.raises(ValueError, match="do not fit"):
        decoder.decode(np.zeros((1, 5, 30)), [6])
    with pytest.raises(ValueError, match="unknown decoding method"):
        CTCDecoder(VOCAB, "viterbi")


@pytest.mark.skipif(importlib.util.find_spec("ctcdecode") is not None, reason="ctcdecode is installed here")
def test_ctcdecode_backend_explains_when_it_is_missing():
    with pytest.raises(ImportError, match="ctcdecode package, which is not installed"):
        CTCDecoder(VOCAB, "beam", backend="ctcdecode")


@pytest.mark.skipif(importlib.util.find_spec("ctcdecode") is None,
                    reason="ctcdecode is not installed (it cannot be built offline)")
def test_ctcdecode_backend_agrees_with_flashlight():
    log_probs = peaky(4, 30, len(VOCAB) + 1, 3)
    ours = CTCDecoder(VOCAB, "beam").decode(log_probs, [30] * 4)
    theirs = CTCDecoder(VOCAB, "beam", backend="ctcdecode").decode(log_probs, [30] * 4)
    assert [h.glosses for h in ours] == [h.glosses for h in theirs]
