"""The uploads a DALI clip decoder hands to PyAV, counted by reason and never silently.

A served `dali-gpu` decoder that cannot use NVDEC still answers every request (PyAV decodes on the CPU), which is
right for the client and wrong to hide from whoever runs the server: its throughput and GPU use are not the ones
asked for. Each reason is logged the first time, with what it means and what to check, and again, with the
running count, each time the count passes a power of ten; `counts` holds the counts for whoever asks (the
`qslr bench gpu-check` decoding part, tests).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

log = logging.getLogger(__name__)

UNAVAILABLE, CODEC, TOO_SMALL, OVER_BUDGET, RUN_FAILED, FRAME_COUNT = (
    "unavailable", "codec", "too small", "over budget", "run failed", "frame count")

_WHY = {
    UNAVAILABLE: "DALI could not start here, so PyAV decodes every upload",
    CODEC: "DALI does not decode this codec on this device, so PyAV decodes such uploads",
    TOO_SMALL: "NVDEC does not decode frames this small, so PyAV decodes such uploads",
    OVER_BUDGET: "an upload's decoded frames alone exceed the decoder's memory budget, so PyAV decodes it",
    RUN_FAILED: "DALI failed a run as a whole (one broken upload does that), so PyAV decodes each of its uploads",
    FRAME_COUNT: "DALI read another frame count than the container states, so PyAV decodes such uploads",
}
# Where NVDEC is meant to work and does not, the usual cause in a container.
_NVDEC_ADVICE = ("; in a container NVDEC needs NVIDIA_DRIVER_CAPABILITIES to include video "
                 "(docker run -e NVIDIA_DRIVER_CAPABILITIES=compute,utility,video)")


class DecoderFallbacks:
    """Uploads handed to PyAV by one decoder (``name``: dali, dali-gpu), by reason; ``report`` writes a line
    to the server log (python_backend's logger in a served model)."""

    def __init__(self, name: str, report: Callable[[str], None] | None = None):
        self.name = name
        self.report = report or log.warning
        self.counts: Counter[str] = Counter()
        self._told: set[str] = set()

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def record(self, reason: str, uploads: int, detail: str = "") -> None:
        """``uploads`` more handed to PyAV for ``reason`` (none yet: DALI could not start); ``detail``: the
        error or the value behind it."""
        before = self.counts[reason]
        if uploads:
            self.counts[reason] += uploads
        after = self.counts[reason]
        if reason not in self._told:
            self._told.add(reason)
            advice = _NVDEC_ADVICE if self.name.endswith("-gpu") and reason in (UNAVAILABLE, RUN_FAILED) else ""
            so_far = f". Uploads decoded by PyAV for this reason so far: {after}" if after else ""
            self.report(f"{self.name} video decoder: {_WHY[reason]} ({detail or 'no detail'}){advice}{so_far}")
        elif len(str(after)) > len(str(before)):  # the count passed 10, 100, 1000, ...
            self.report(f"{self.name} video decoder: uploads decoded by PyAV so far because {_WHY[reason]}: "
                        f"{after}")
