"""What `qslr bench gpu-check` reports of each part: proven, failed, or not proven with the reason.

A part is proven only by running and passing its own judgement; a part that could not run here (a package missing,
one GPU where it needs two, the time budget spent, a run it builds on that failed) is not proven, never passed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

PROVEN, FAILED, NOT_PROVEN = "proven", "failed", "not proven"


class NotProven(Exception):
    """Raised by a part that cannot run here; the message says why."""


@dataclass(frozen=True)
class Requirement:
    """What a part needs from the machine, checked before it starts; ``reason`` is what is said when it is absent."""

    reason: str
    met: Callable[[], bool]


@dataclass(frozen=True)
class Part:
    id: str  # what --only takes
    title: str
    needs: tuple[Requirement, ...]
    run: Callable[[], dict]  # returns what it measured; raises AssertionError (or any error) when it fails


@dataclass
class Outcome:
    part: str
    title: str
    status: str  # PROVEN, FAILED or NOT_PROVEN
    seconds: float = 0.0
    reason: str | None = None  # why not proven, or the error of a failed part
    details: dict = field(default_factory=dict)


def prove(parts: list[Part], budget_s: float, clock: Callable[[], float] = time.perf_counter) -> list[Outcome]:
    """Each part in turn. What a part needs is checked first, so that each says what this machine lacks even when
    the budget is spent; a part not started within ``budget_s`` is not proven, so the report always comes back."""
    outcomes = []
    begun = clock()
    for part in parts:
        missing = [need.reason for need in part.needs if not need.met()]
        if missing:
            outcomes.append(Outcome(part.id, part.title, NOT_PROVEN, reason="; ".join(missing)))
            continue
        if clock() - begun > budget_s:
            outcomes.append(Outcome(part.id, part.title, NOT_PROVEN,
                                    reason=f"time budget of {budget_s:.0f} s spent before it started"))
            continue
        started = clock()
        try:
            details = part.run()
        except NotProven as why:
            outcomes.append(Outcome(part.id, part.title, NOT_PROVEN, clock() - started, str(why)))
        except ModuleNotFoundError as missing_module:
            # A third-party package that the part's requirements did not name; one of QSLR's own is a defect.
            ours = (missing_module.name or "").partition(".")[0] == "qslr"
            status = FAILED if ours else NOT_PROVEN
            outcomes.append(Outcome(part.id, part.title, status, clock() - started,
                                    f"needs {missing_module.name}, not installed here"))
        except Exception as exc:  # noqa: BLE001 - one failed part must not hide the others
            outcomes.append(Outcome(part.id, part.title, FAILED, clock() - started,
                                    f"{type(exc).__name__}: {exc}"[-1500:]))
        else:
            outcomes.append(Outcome(part.id, part.title, PROVEN, clock() - started, details=details))
    return outcomes


class Once:
    """A step several parts build on (the corpus, the trained checkpoint), run at most once. If it failed, the
    first part that asked fails with its error, and later ones are not proven, naming the step."""

    def __init__(self, name: str, step: Callable[[], object]):
        self.name, self.step = name, step
        self.value: object = None
        self.error: str | None = None
        self.done = False

    def __call__(self):
        if self.error is not None:
            raise NotProven(f"{self.name}, which it builds on, failed: {self.error}")
        if not self.done:
            try:
                self.value = self.step()
            except NotProven:
                raise
            except Exception as exc:
                self.error = f"{type(exc).__name__}: {exc}"[:300]
                raise
            self.done = True
        return self.value
