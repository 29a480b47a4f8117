"""gpu-check's verdicts: a part is proven only by running and passing; whatever kept it from running is said."""

from __future__ import annotations

import itertools

import pytest

from qslr.tools.gpu_proof import FAILED, NOT_PROVEN, PROVEN, NotProven, Once, Part, Requirement, prove

PRESENT = Requirement("never said", lambda: True)
NO_GPU = Requirement("no CUDA device", lambda: False)
NO_PACKAGE = Requirement("TensorRT is not installed", lambda: False)


def part(name: str, run, *needs: Requirement) -> Part:
    return Part(name, name.title(), needs, run)


def failing() -> dict:
    raise AssertionError("differs by 3.1e-01, over the tolerance of 5e-02")


def unable() -> dict:
    raise NotProven("one GPU: no NCCL collective")


def missing_package() -> dict:
    import qslr_gpu_check_absent_package  # noqa: F401

    return {}


def test_each_part_is_proven_failed_or_not_proven_with_the_reason():
    outcomes = prove([part("passes", lambda: {"max_difference": 1e-3}, PRESENT), part("fails", failing),
                      part("cannot", unable), part("lacks", lambda: {}, NO_GPU, PRESENT, NO_PACKAGE),
                      part("imports", missing_package)], budget_s=60)
    verdicts = {o.part: (o.status, o.reason) for o in outcomes}
    assert verdicts == {
        "passes": (PROVEN, None),
        "fails": (FAILED, "AssertionError: differs by 3.1e-01, over the tolerance of 5e-02"),
        "cannot": (NOT_PROVEN, "one GPU: no NCCL collective"),
        "lacks": (NOT_PROVEN, "no CUDA device; TensorRT is not installed"),
        "imports": (NOT_PROVEN, "needs qslr_gpu_check_absent_package, not installed here"),
    }
    assert outcomes[0].details == {"max_difference": 1e-3}


def test_a_missing_module_of_qslr_itself_fails_the_part():
    def broken() -> dict:
        import qslr.tools.no_such_module  # noqa: F401

        return {}

    assert prove([part("broken", broken)], budget_s=60)[0].status == FAILED


def test_parts_not_started_within_the_budget_are_not_proven_and_what_they_lack_still_shows():
    ran = []
    ticks = itertools.count(0, 10)  # every reading of the clock is 10 s after the one before
    outcomes = prove([part("first", lambda: ran.append("first") or {}), part("late", lambda: ran.append("late") or {}),
                      part("lacking", lambda: {}, NO_GPU)], budget_s=15, clock=lambda: float(next(ticks)))
    assert ran == ["first"]
    assert [(o.status, o.reason) for o in outcomes] == [
        (PROVEN, None), (NOT_PROVEN, "time budget of 15 s spent before it started"), (NOT_PROVEN, "no CUDA device")]


def test_a_shared_step_runs_once_and_its_failure_is_named_by_the_parts_after():
    calls = []

    def train() -> str:
        calls.append(1)
        raise RuntimeError("CUDA out of memory")

    checkpoint = Once("the bf16 training run", train)
    outcomes = prove([part("train", checkpoint), part("export", lambda: {"from": checkpoint()})], budget_s=60)
    assert [o.status for o in outcomes] == [FAILED, NOT_PROVEN] and len(calls) == 1
    assert outcomes[0].reason == "RuntimeError: CUDA out of memory"
    assert outcomes[1].reason == ("the bf16 training run, which it builds on, failed: RuntimeError: CUDA out of "
                                  "memory")


def test_a_shared_step_that_worked_is_not_run_again():
    calls = []
    corpus = Once("the synthetic corpus", lambda: calls.append(1) or "data/synthetic")
    assert corpus() == corpus() == "data/synthetic" and len(calls) == 1


def test_a_shared_step_that_cannot_run_here_leaves_each_part_not_proven():
    needed = Once("the corpus", unable)
    outcomes = prove([part("a", needed), part("b", needed)], budget_s=60)
    assert [(o.status, o.reason) for o in outcomes] == [(NOT_PROVEN, "one GPU: no NCCL collective")] * 2


def test_a_dali_gpu_decoder_that_hands_its_uploads_to_pyav_proves_nothing(tiny_corpus):
    """Here NVDEC cannot start (no GPU): the decoder falls back to PyAV, which the part must not take for NVDEC
    agreeing with PyAV."""
    from types import SimpleNamespace

    from qslr.tools.gpu_decoding_checks import dali_decoder

    with pytest.raises(NotProven, match="handed uploads to PyAV"):
        dali_decoder(SimpleNamespace(corpus=lambda: tiny_corpus[0]))
