"""Gloss spans in seconds: the arithmetic on hand-worked cases, clipping, unknown rates, bad input, and the
spans of real decodings (ordered, non-overlapping, inside the video)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from qslr.model.decoding import CTCDecoder
from qslr.model.gloss_spans import frame_rate, gloss_spans

VOCAB = {f"G{i}": i for i in range(1, 12)}


def test_steps_become_seconds_and_the_last_span_ends_with_the_video():
    # 4 frames per step at 25 fps: step s starts at 0.16 s * s; the video has 22 frames (0.88 s), so the
    # second gloss's last step (5, frames 20-23) is cut at the video's end.
    spans = gloss_spans([0, 3], [1, 5], 4, 25.0, 22)
    assert [value for span in spans for value in span] == pytest.approx([0.0, 0.32, 0.48, 0.88])


def test_a_gloss_of_one_step_lasts_one_step():
    ((start, end),) = gloss_spans([2], [2], 4, 30.0, 100)
    assert (start, end) == pytest.approx((8 / 30, 12 / 30))


def test_an_unknown_rate_gives_nan_spans_never_a_guess():
    spans = gloss_spans([0, 2], [1, 3], 4, 0.0, 40)
    assert len(spans) == 2 and all(math.isnan(value) for span in spans for value in span)
    assert gloss_spans([], [], 4, 25.0, 0) == []


def test_the_video_rate_wins_over_the_models():
    assert frame_rate(30.0, 25.0) == 30.0
    assert frame_rate(0.0, 25.0) == 25.0  # a container that states no rate
    assert frame_rate(None, 25.0) == 25.0
    assert frame_rate(float("nan"), None) == 0.0
    assert frame_rate(0.0, 0.0) == 0.0


@pytest.mark.parametrize("starts, ends, step, frames, message", [
    ([0, 1], [1], 4, 10, "start steps but"),
    ([3], [2], 4, 10, "start step <= end step"),
    ([-1], [0], 4, 10, "start step <= end step"),
    ([0], [0], 0, 10, "frames_per_step"),
    ([0], [0], 4, -1, "cannot have"),
])
def test_bad_steps_are_refused(starts, ends, step, frames, message):
    with pytest.raises(ValueError, match=message):
        gloss_spans(starts, ends, step, 25.0, frames)


@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_spans_of_decodings_are_ordered_disjoint_and_inside_the_video(method):
    rng = np.random.default_rng(5)
    logits = rng.normal(0, 1, (6, 30, len(VOCAB) + 1)).astype(np.float32)
    logits[:, :, 0] += 2
    frames = [118, 120, 97, 40, 9, 1]  # ceil(frames / 4) output steps each
    lengths = [-(-n // 4) for n in frames]
    decoded = CTCDecoder(VOCAB, method).decode(torch.from_numpy(logits).log_softmax(-1), lengths)
    assert sum(len(h.glosses) for h in decoded) > 10
    for hypothesis, count in zip(decoded, frames, strict=True):
        spans = gloss_spans(hypothesis.steps, hypothesis.ends, 4, 25.0, count)
        for start, end in spans:
            assert 0 <= start < end <= count / 25.0
        for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
            assert end <= start
