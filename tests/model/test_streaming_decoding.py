"""Streaming CTC decoding: pushed in pieces it equals decoding the whole output in segments, bit for bit; greedy
segmented equals greedy whole; committed glosses never change but for a merged repeat's end; the work per update
stays bounded on a 10-minute stream; alternatives over segments."""

from __future__ import annotations

import time

import numpy as np
import pytest

from qslr.model.decoding import CTCDecoder
from qslr.model.streaming_decoding import SegmentRule, StreamingDecoder, decode_in_segments
from qslr.train.scoring.alignment import align, count

VOCAB = {f"G{i}": i for i in range(1, 13)}
CLASSES = len(VOCAB) + 1


def signing(steps: int, seed: int, pause: float = 0.5) -> np.ndarray:
    """Log-probabilities of a model watching someone sign: bursts of a few steps of glosses (a sign's steps,
    at times two glosses in a row, or a gloss held) between pauses where the blank is nearly sure."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1, (steps, CLASSES)).astype(np.float32)
    logits[:, 0] += 8
    step = 0
    while step < steps:
        if rng.random() < pause:
            step += int(rng.integers(1, 4))
            continue
        for _ in range(int(rng.integers(1, 5))):
            if step >= steps:
                break
            logits[step, rng.integers(1, CLASSES)] += float(rng.uniform(6, 14))
            step += 1
    logits -= np.log(np.exp(logits).sum(-1, keepdims=True))
    return logits


def _pieces(log_probs: np.ndarray, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(np.arange(1, len(log_probs)), size=min(12, len(log_probs) - 1), replace=False))
    return np.split(log_probs, cuts)


def _answer(hypothesis):
    return hypothesis.glosses, hypothesis.ids, hypothesis.steps, hypothesis.ends, hypothesis.score


@pytest.mark.parametrize("method", ["greedy", "beam"])
@pytest.mark.parametrize("merge", [True, False])
@pytest.mark.parametrize(("rule", "seed"), [(SegmentRule(), 0), (SegmentRule(0.6, 6), 1), (SegmentRule(0.99, 2), 2)])
def test_pushed_in_pieces_it_equals_the_whole_output_in_segments(method, merge, rule, seed):
    decoder = CTCDecoder(VOCAB, method, merge_repeats=merge)
    log_probs = signing(300, seed)
    stream = StreamingDecoder(decoder, rule)
    for piece in _pieces(log_probs, seed):
        stream.push(piece)
        stream.tentative(log_probs[:3])  # what an update asks between pushes changes nothing committed
    (streamed,) = stream.finish()
    (whole,) = decode_in_segments(decoder, log_probs, rule)
    assert _answer(streamed) == _answer(whole)
    assert streamed.glosses, "the test signing has glosses"


@pytest.mark.parametrize("merge", [True, False])
@pytest.mark.parametrize("seed", range(4))
def test_greedy_in_segments_is_greedy_on_the_whole_output(merge, seed):
    """Cut at steps where the blank wins, greedy decoding loses nothing; with merge_repeats, a forced cut within
    a sign (max_steps 4) loses nothing either (the gloss that ends a segment and starts the next is joined)."""
    decoder = CTCDecoder(VOCAB, "greedy", merge_repeats=merge)
    log_probs = signing(400, seed)
    (whole,) = decoder.decode(log_probs[None], [len(log_probs)])
    rules = [SegmentRule(), SegmentRule(0.99, 64)] + ([SegmentRule(0.9, 4)] if merge else [])
    for rule in rules:
        (segmented,) = decode_in_segments(decoder, log_probs, rule)
        assert (segmented.glosses, segmented.steps, segmented.ends) == (whole.glosses, whole.steps, whole.ends)
        assert segmented.score == pytest.approx(whole.score, rel=1e-5)


def test_beam_in_segments_nearly_agrees_with_beam_on_the_whole_output():
    """Restarting the beam at a pause costs little: over 6 streams of some 110 glosses, at most 1 % of the
    glosses differ (measured: one inserted gloss, whose labelling scores higher than the whole beam's answer)."""
    decoder = CTCDecoder(VOCAB, "beam")
    differences = glosses = 0
    for seed in range(6):
        log_probs = signing(300, seed)
        (whole,) = decoder.decode(log_probs[None], [len(log_probs)])
        (segmented,) = decode_in_segments(decoder, log_probs)
        edits = count(list(align(whole.glosses, segmented.glosses)))
        differences += edits.substitutions + edits.deletions + edits.insertions
        glosses += len(whole.glosses)
    assert glosses > 500 and differences <= 0.01 * glosses


def test_committed_glosses_never_change_but_a_merged_repeat_s_end():
    decoder = CTCDecoder(VOCAB, "beam")
    log_probs = signing(600, 5)
    stream = StreamingDecoder(decoder, SegmentRule(0.9, 8))
    seen: list = []
    for piece in _pieces(log_probs, 5):
        changed = stream.push(piece)
        assert changed >= len(seen) - 1
        for before, now in zip(seen[:changed], stream.final[:changed], strict=True):
            assert before == now
        if changed < len(seen):  # the last committed gloss, continued by the segment after it
            before, now = seen[changed], stream.final[changed]
            assert (before.gloss, before.start) == (now.gloss, now.start) and now.end >= before.end
        seen = list(stream.final)
    assert len(seen) > 10


def test_a_merged_repeat_across_a_cut_is_one_gloss():
    """G3 peaks, a pause closes the segment, G3 peaks again: with merge_repeats one gloss ending at the second
    peak, as the decoder gives for the whole output; without, two (the blank between them separates them)."""
    rows = np.full((6, CLASSES), -20.0, np.float32)
    rows[:, 0] = 0.0
    rows[1], rows[4] = -20.0, -20.0
    rows[1, 3], rows[4, 3] = 0.0, 0.0
    for merge, expected in ((True, (["G3"], [1], [4])), (False, (["G3", "G3"], [1, 4], [1, 4]))):
        decoder = CTCDecoder(VOCAB, "beam", merge_repeats=merge)
        (answer,) = decode_in_segments(decoder, rows, SegmentRule())
        assert (answer.glosses, answer.steps, answer.ends) == expected
        (whole,) = decoder.decode(rows[None], [len(rows)])
        assert (whole.glosses, whole.steps, whole.ends) == expected


def test_the_work_per_update_stays_bounded_on_a_10_minute_stream():
    """25 fps and 4 frames a step: 3,750 steps, pushed 8 at a time (a window's middle) with 4 tentative steps
    after each. The steps each update decodes stay under the longest segment plus the update's own, and the
    last minute's updates cost no more than the first minute's."""
    decoder = CTCDecoder(VOCAB, "beam")
    rule = SegmentRule()
    log_probs = signing(3750, 7, pause=0.3)
    stream = StreamingDecoder(decoder, rule)
    work, seconds = [], []
    for start in range(0, len(log_probs), 8):
        before, started = stream.steps_decoded, time.perf_counter()
        stream.push(log_probs[start:start + 8])
        stream.tentative(log_probs[start + 8:start + 12])
        seconds.append(time.perf_counter() - started)
        work.append(stream.steps_decoded - before)
    minute = 375 // 8  # updates a minute
    assert max(work) <= 2 * (rule.max_steps + 8 + 4)
    assert max(work[-minute:]) <= max(work[:minute]) + 8
    assert np.median(seconds[-minute:]) < 3 * np.median(seconds[:minute]) + 1e-3
    assert len(stream.final) > 500 and stream.steps == 3750


def test_alternatives_over_segments_are_distinct_best_first_and_start_with_the_best():
    decoder = CTCDecoder(VOCAB, "beam")
    log_probs = signing(120, 3)
    (best,) = decode_in_segments(decoder, log_probs)
    alternatives = decode_in_segments(decoder, log_probs, top_k=4)
    assert _answer(alternatives[0])[:4] == _answer(best)[:4]
    assert alternatives[0].score == pytest.approx(best.score)
    scores = [a.score for a in alternatives]
    assert scores == sorted(scores, reverse=True) and len(alternatives) == 4
    assert len({tuple(a.ids) for a in alternatives}) == 4
    # One segment (no pause closes it): the decoder's own alternatives.
    one = log_probs[:5]
    rule = SegmentRule(0.999999, 64)
    expected = decoder.decode_alternatives(one[None], [5], 3)[0]
    assert [_answer(a) for a in decode_in_segments(decoder, one, rule, top_k=3)] == [_answer(a) for a in expected]


@pytest.mark.parametrize(("probability", "steps", "message"), [(0.5, 8, "must lie in"), (1.0, 8, "must lie in"),
                                                               (0.9, 1, "at least 2")])
def test_a_rule_that_cannot_work_is_refused(probability, steps, message):
    with pytest.raises(ValueError, match=message):
        SegmentRule(probability, steps)
