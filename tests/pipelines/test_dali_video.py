"""The memory rule of DALI's whole-video decoder, as plain functions (no DALI needed): how a batch is split into
runs whose decoded frames fit a budget."""

from __future__ import annotations

import numpy as np
import pytest

from qslr.pipelines.dali_video import DECODER_FRAMES_PER_VIDEO, decoded_bytes, decoding_runs


def test_a_videos_decoded_bytes_are_its_rgb_frames_and_the_decoders():
    assert decoded_bytes(400, 1080, 1920) == (400 + DECODER_FRAMES_PER_VIDEO) * 1080 * 1920 * 3
    assert decoded_bytes(1, 2, 3) == (1 + DECODER_FRAMES_PER_VIDEO) * 18


def test_runs_are_consecutive_within_the_budget_and_each_as_full_as_the_next_video_allows():
    rng = np.random.default_rng(5)
    checked = 0
    for _ in range(200):
        budget = int(rng.integers(10, 100))
        max_videos = int(rng.integers(1, 6))
        sizes = [int(s) for s in rng.integers(1, budget + 1, size=int(rng.integers(0, 20)))]
        runs = decoding_runs(sizes, budget, max_videos)
        assert [i for run in runs for i in run] == list(range(len(sizes)))  # every video once, in order
        for run, following in zip(runs, runs[1:], strict=False):  # a run closes only when its next video won't fit
            assert len(run) == max_videos or sum(sizes[i] for i in run) + sizes[following[0]] > budget
            checked += 1
        assert all(1 <= len(run) <= max_videos and sum(sizes[i] for i in run) <= budget for run in runs)
    assert checked > 500


def test_the_served_sizes_in_runs():
    budget = 4 * 2**30
    hd = decoded_bytes(400, 1080, 1920)
    assert decoding_runs([hd] * 16, budget, 16) == [[i] for i in range(16)]  # 2.6 GB each: one a run
    phoenix = decoded_bytes(400, 210, 260)
    assert decoding_runs([phoenix] * 16, budget, 16) == [list(range(16))]  # 1.1 GB in all: one run
    assert decoding_runs([phoenix] * 16, budget, 4) == [list(range(s, s + 4)) for s in range(0, 16, 4)]
    assert decoding_runs([], budget, 16) == []


def test_a_video_over_the_budget_alone_or_a_run_of_none_is_refused():
    with pytest.raises(ValueError, match="^video 1 needs 11 bytes decoded, over the budget of 10 bytes alone$"):
        decoding_runs([3, 11, 2], 10, 4)
    with pytest.raises(ValueError, match="at least one video"):
        decoding_runs([3], 10, 0)
