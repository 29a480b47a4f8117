"""What recognising one video gives, whether a server or the local recogniser answered."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Alternative:
    glosses: list[str]
    score: float


@dataclass(frozen=True)
class Recognition:
    glosses: list[str]
    steps: list[int]  # output step where each gloss starts
    score: float
    start_s: list[float]  # each gloss's span in the video, in seconds (NaN where no frame rate is known)
    end_s: list[float]
    alternatives: list[Alternative]  # the best distinct labellings, best first; the first is this answer
    # What was done to the video to bring it to the model (pipelines/framing.py's FramingRecord.to_dict()); None
    # for frames sent as they are.
    framing: dict | None = None

    @property
    def spans(self) -> list[tuple[str, float, float]]:
        return list(zip(self.glosses, self.start_s, self.end_s, strict=True))
