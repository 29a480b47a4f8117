"""Word alignment with sclite's costs and tie-breaking, and the error counts built on it.

sclite aligns with a weighted Levenshtein distance (correct 0, substitution 4, insertion 3, deletion 3),
compares words case-insensitively, and where several alignments cost the same, prefers - tracing back
from the end - a match or substitution, then an insertion, then a deletion. The test suite checks this
against the sclite binary itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

SUBSTITUTION_COST, INSERTION_COST, DELETION_COST = 4, 3, 3
CORRECT, SUBSTITUTION, DELETION, INSERTION = "C", "S", "D", "I"


@dataclass(frozen=True)
class Counts:
    correct: int = 0
    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0

    @property
    def reference_words(self) -> int:
        return self.correct + self.substitutions + self.deletions

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def wer(self) -> float:
        """Percent of reference words in error (sclite's "Percent Total Error")."""
        return 100.0 * self.errors / self.reference_words if self.reference_words else 0.0

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.correct + other.correct, self.substitutions + other.substitutions,
                      self.deletions + other.deletions, self.insertions + other.insertions)

    @staticmethod
    def total(counts: Iterable[Counts]) -> Counts:
        return sum(counts, Counts())


def align(reference: Sequence[str], hypothesis: Sequence[str]) -> list[tuple[str, str | None, str | None]]:
    """Alignment operations (op, reference word, hypothesis word) from first to last word."""
    ref = [w.casefold() for w in reference]
    hyp = [w.casefold() for w in hypothesis]
    rows, cols = len(ref) + 1, len(hyp) + 1
    cost = [[0] * cols for _ in range(rows)]
    for i in range(1, rows):
        cost[i][0] = i * DELETION_COST
    for j in range(1, cols):
        cost[0][j] = j * INSERTION_COST
    for i in range(1, rows):
        above, here = cost[i - 1], cost[i]
        r = ref[i - 1]
        for j in range(1, cols):
            diagonal = above[j - 1] + (0 if r == hyp[j - 1] else SUBSTITUTION_COST)
            here[j] = min(diagonal, above[j] + DELETION_COST, here[j - 1] + INSERTION_COST)
    operations = []
    i, j = len(ref), len(hyp)
    while i or j:
        if i and j and cost[i][j] == cost[i - 1][j - 1] + (0 if ref[i - 1] == hyp[j - 1] else SUBSTITUTION_COST):
            op = CORRECT if ref[i - 1] == hyp[j - 1] else SUBSTITUTION
            operations.append((op, reference[i - 1], hypothesis[j - 1]))
            i, j = i - 1, j - 1
        elif j and cost[i][j] == cost[i][j - 1] + INSERTION_COST:
            operations.append((INSERTION, None, hypothesis[j - 1]))
            j -= 1
        else:
            operations.append((DELETION, reference[i - 1], None))
            i -= 1
    operations.reverse()
    return operations


def count(operations: Iterable[tuple[str, str | None, str | None]]) -> Counts:
    tally = {CORRECT: 0, SUBSTITUTION: 0, DELETION: 0, INSERTION: 0}
    for op, _, _ in operations:
        tally[op] += 1
    return Counts(tally[CORRECT], tally[SUBSTITUTION], tally[DELETION], tally[INSERTION])


def correct_positions(operations: Iterable[tuple[str, str | None, str | None]]) -> list[bool]:
    """For each reference word, whether the hypothesis got it right (insertions have no position)."""
    return [op == CORRECT for op, ref, _ in operations if ref is not None]
