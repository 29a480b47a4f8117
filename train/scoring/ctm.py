"""sclite CTM hypothesis files: ``<id> 1 <start> <duration> <word>``, one recognised gloss a line."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from qslr.pipelines.atomic_output import write_text_atomic

EMPTY = "[EMPTY]"
STEP_SECONDS = 0.01  # the original writes output step i as [i / 100, (i + 1) / 100)


def ctm_lines(utterance: str, glosses: Sequence[str], frames: Sequence[int] | None = None) -> list[str]:
    """Lines for one utterance; ``frames`` are output steps (the gloss order is what scoring uses)."""
    steps = frames if frames is not None else range(len(glosses))
    return [f"{utterance} 1 {step * STEP_SECONDS:.2f} {STEP_SECONDS:.2f} {gloss}" for gloss, step in zip(glosses, steps,
                                                                                                         strict=True)]


def write_ctm(path: str | Path, hypotheses: Iterable[tuple[str, Sequence[str], Sequence[int] | None]]) -> None:
    """Write (utterance, glosses, frames) triples; an utterance without glosses writes no line."""
    lines = [line for utterance, glosses, frames in hypotheses for line in ctm_lines(utterance, glosses, frames)]
    write_text_atomic(path, "".join(line + "\n" for line in lines))


def read_ctm(path: str | Path) -> dict[str, list[tuple[float, str]]]:
    """utterance -> [(start, word)] in file order; a malformed line is an error naming file and line."""
    path = Path(path)
    hypotheses: dict[str, list[tuple[float, str]]] = {}
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.startswith(";;"):
            continue
        fields = line.split()
        if len(fields) < 5:
            raise ValueError(f"{path}:{line_no}: a CTM line needs 5 fields (id channel start duration word), "
                             f"got {len(fields)}")
        try:
            start = float(fields[2])
            float(fields[3])
        except ValueError:
            raise ValueError(f"{path}:{line_no}: start and duration must be numbers") from None
        hypotheses.setdefault(fields[0], []).append((start, fields[4]))
    return hypotheses


def sorted_words(entries: Sequence[tuple[float, str]]) -> list[str]:
    """Words of one utterance in time order (the original sorts by start; equal starts keep file order)."""
    return [word for _, word in sorted(entries, key=lambda entry: entry[0])]


def hypotheses_for(references: Mapping[str, object], ctm: Mapping[str, list[tuple[float, str]]],
                   normalise) -> dict[str, list[str]]:
    """Normalised hypothesis words per reference utterance; [EMPTY] where nothing is left (mergectmstm)."""
    result = {}
    for utterance in references:
        words = [w for w in (normalise(word) for word in sorted_words(ctm.get(utterance, []))) if w]
        result[utterance] = words or [EMPTY]
    return result
