"""CTC decoding: collapse rules, gloss ends, N-best lists against brute force, greedy equals beam on peaky
outputs, the optional ctcdecode backend."""

from __future__ import annotations

import importlib.util
import itertools
import math

import numpy as np
import pytest
import torch

from qslr.model.decoding import CTCDecoder, collapse_path, gloss_ends

VOCAB = {f"G{i}": i for i in range(1, 30)}


@pytest.mark.parametrize("path, ids, frames, ends", [
    ([0, 0, 0], [], [], []),
    ([3, 3, 0, 5], [3, 5], [0, 3], [1, 3]),
    ([0, 3, 0, 3, 4], [3, 4], [1, 4], [3, 4]),  # a gloss repeated across a blank is merged, as the original does
    ([2, 2, 2, 7, 7, 2], [2, 7, 2], [0, 3, 5], [2, 4, 5]),
    ([5], [5], [0], [0]),
    ([0, 4, 4, 4, 0, 0, 4, 0, 6, 0], [4, 6], [1, 8], [6, 8]),
])
def test_collapse(path, ids, frames, ends):
    assert collapse_path(path) == (ids, frames, ends)


@pytest.mark.parametrize("path, ids, frames, ends", [
    ([0, 3, 0, 3, 4], [3, 3, 4], [1, 3, 4], [1, 3, 4]),  # CTC's own rule: the blank separates two glosses
    ([3, 3, 0, 5], [3, 5], [0, 3], [1, 3]),
    ([0, 4, 4, 4, 0, 0, 4, 0, 6, 0], [4, 4, 6], [1, 6, 8], [3, 6, 8]),
])
def test_collapse_without_merging_repeats(path, ids, frames, ends):
    assert collapse_path(path, merge_repeats=False) == (ids, frames, ends)


def test_ends_of_starts_the_labels_do_not_confirm_stay_at_the_start():
    # ctcdecode reports starts without a path: the ends come from the frame-wise best labels.
    assert gloss_ends([0, 2, 2, 0, 3, 0, 0], [2, 5, 3], [1, 3, 4]) == [2, 3, 4]


def peaky(batch: int, steps: int, classes: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1, (batch, steps, classes)).astype(np.float32)
    logits[:, :, 0] += 10
    for b, t in zip(*np.nonzero(rng.random((batch, steps)) < 0.35), strict=True):
        logits[b, t, rng.integers(1, classes)] += 20
    return torch.from_numpy(logits).log_softmax(-1)


@pytest.mark.parametrize("merge", [True, False])
@pytest.mark.parametrize("seed", range(5))
def test_greedy_equals_beam_on_peaky_outputs(seed, merge):
    log_probs = peaky(8, 40, len(VOCAB) + 1, seed)
    lengths = torch.tensor([40, 39, 33, 20, 12, 7, 1, 0])
    greedy = CTCDecoder(VOCAB, "greedy", merge_repeats=merge).decode(log_probs, lengths)
    beam = CTCDecoder(VOCAB, "beam", merge_repeats=merge).decode(log_probs, lengths)
    for g, b in zip(greedy, beam, strict=True):
        assert (g.glosses, g.steps, g.ends) == (b.glosses, b.steps, b.ends)
        assert all(s <= e for s, e in zip(b.steps, b.ends, strict=True))
        assert all(e < s for e, s in zip(b.ends, b.steps[1:], strict=False))
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


def brute_force_n_best(log_probs: torch.Tensor, k: int, merge: bool = True) -> list[tuple[tuple[int, ...], float]]:
    """Every path of a tiny problem: the CTC labellings' summed probabilities; with ``merge``, a labelling the
    original's rule merges further (a gloss repeated across a blank) scores as its best CTC labelling, as a beam
    keeps both."""
    probs = log_probs[0].double().exp().numpy()
    steps, classes = probs.shape
    labellings: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(classes), repeat=steps):
        labelling = tuple(label for label, _ in itertools.groupby(path) if label != 0)
        labellings[labelling] = labellings.get(labelling, 0.0) + math.prod(probs[t, c] for t, c in enumerate(path))
    merged: dict[tuple[int, ...], float] = {}
    for labelling, probability in labellings.items():
        key = tuple(label for label, _ in itertools.groupby(labelling)) if merge else labelling
        merged[key] = max(merged.get(key, -math.inf), math.log(probability))
    return sorted(merged.items(), key=lambda item: -item[1])[:k]


@pytest.mark.parametrize("merge", [True, False])
@pytest.mark.parametrize("seed", range(3))
def test_alternatives_are_the_best_distinct_labellings(seed, merge):
    rng = np.random.default_rng(seed)
    log_probs = torch.from_numpy(rng.normal(0, 1.5, (1, 5, 4)).astype(np.float32)).log_softmax(-1)
    vocab = {"A": 1, "B": 2, "C": 3}
    # A beam wide enough to hold every labelling makes the search exact.
    decoder = CTCDecoder(vocab, "beam", beam_size=200, beam_size_token=4, beam_threshold=1000.0,
                         merge_repeats=merge)
    (alternatives,) = decoder.decode_alternatives(log_probs, [5], 6)
    expected = brute_force_n_best(log_probs, 6, merge)
    assert [tuple(h.ids) for h in alternatives] == [ids for ids, _ in expected]
    assert [h.score for h in alternatives] == pytest.approx([score for _, score in expected], abs=1e-4)
    assert alternatives[0] == decoder.decode(log_probs, [5])[0]


def test_alternatives_are_distinct_sorted_and_at_most_k():
    log_probs = peaky(3, 30, len(VOCAB) + 1, 11) * 0.3  # flattened, so that the beam holds many labellings
    decoder = CTCDecoder(VOCAB, "beam", beam_size=10)
    best = decoder.decode(log_probs, [30, 20, 5])
    for first, alternatives in zip(best, decoder.decode_alternatives(log_probs, [30, 20, 5], 4), strict=True):
        assert alternatives[0] == first
        assert 1 <= len(alternatives) <= 4
        assert len({tuple(h.ids) for h in alternatives}) == len(alternatives)
        assert [h.score for h in alternatives] == sorted((h.score for h in alternatives), reverse=True)
    # A beam of width w holds at most w labellings.
    assert len(CTCDecoder(VOCAB, "beam", beam_size=2).decode_alternatives(log_probs, [30, 20, 5], 5)[0]) <= 2


def test_greedy_gives_one_answer_only():
    log_probs = peaky(1, 10, len(VOCAB) + 1, 2)
    greedy = CTCDecoder(VOCAB, "greedy")
    assert greedy.decode_alternatives(log_probs, [10]) == [greedy.decode(log_probs, [10])]
    with pytest.raises(ValueError, match="needs beam search"):
        greedy.decode_alternatives(log_probs, [10], 2)
    with pytest.raises(ValueError, match="at least 1"):
        CTCDecoder(VOCAB, "beam").decode_alternatives(log_probs, [10], 0)


def test_lengths_cut_the_decoding():
    log_probs = peaky(1, 30, len(VOCAB) + 1, 7)
    full = CTCDecoder(VOCAB, "beam").decode(log_probs, [30])[0]
    cut = CTCDecoder(VOCAB, "beam").decode(log_probs, [10])[0]
    assert all(f <= e < 10 for f, e in zip(cut.steps, cut.ends, strict=True))
    assert cut.glosses == full.glosses[: len(cut.glosses)]


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
    assert [h.ends for h in ours] == [h.ends for h in theirs]
