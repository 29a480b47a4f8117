"""CTC decoding of output steps that keep coming (a live stream, a long video), with bounded work per update.

Re-decoding every step after each new one is O(n) per update. Streaming CTC decoders instead commit what lies
before a blank-dominated step and restart the search after it: a step where the model is nearly sure nothing is
being signed separates what comes before from what comes after. So the steps are cut into segments: a segment
closes at its first step whose blank probability reaches ``blank_probability`` after a step that does not (so a
pause between signs closes the sign before it), or, where the signer never pauses, at ``max_steps`` (after its
leading pause if it has one, else at its most blank step). Each closed segment is decoded once, its glosses are
final, and the open segment plus whatever tentative steps follow it is what each update re-decodes: at most
``max_steps`` plus those, however long the stream.

The cuts depend on the steps alone, so decoding a whole output in one go (`decode_in_segments`) and step by step
give the same segments, the same glosses and the same score, bit for bit. Greedy decoding gives what it gives on
the whole output; a beam search restarted at a cut may differ from one run across it, which is what makes its
work bounded. Joining segments follows the decoder's rule: with ``merge_repeats`` a gloss that ends one segment
and starts the next is one gloss (its end moves on), as it is within a segment.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np

from qslr.model.decoding import BLANK, CTCDecoder, Hypothesis
from qslr.model.decoding_defaults import COMMIT_BLANK_PROBABILITY, MAX_SEGMENT_STEPS


@dataclass(frozen=True)
class SegmentRule:
    blank_probability: float = COMMIT_BLANK_PROBABILITY  # a step at least this sure of the blank closes a segment
    max_steps: int = MAX_SEGMENT_STEPS  # the longest segment, where the signer never pauses

    def __post_init__(self) -> None:
        if not 0.5 < self.blank_probability < 1:
            raise ValueError(f"the blank probability that closes a segment must lie in (0.5, 1), got "
                             f"{self.blank_probability}")
        if self.max_steps < 2:
            raise ValueError(f"a segment must be allowed at least 2 steps, got {self.max_steps}")


@dataclass(frozen=True)
class DecodedGloss:
    gloss: str
    id: int
    start: int  # first output step, of the whole stream
    end: int  # last output step labelled with it


# One labelling of the segments so far, kept as a chain that shares its past with the others: the glosses a
# segment added (after merging its first into the one before, which then ends at ``extend_to``).
@dataclass(frozen=True)
class _Link:
    parent: _Link | None
    glosses: tuple[DecodedGloss, ...]
    extend_to: int | None  # the previous link's last gloss now ends here (a repeat merged across the cut)
    last_id: int | None  # the labelling's last gloss, for the next join
    key: int  # a hash of the whole labelling, to keep labellings distinct without walking the chain


_HASH_BASE, _HASH_MODULUS = 1_000_003, (1 << 61) - 1


def _materialise(link: _Link | None) -> list[DecodedGloss]:
    parts, extend = [], None  # extend: where a later link moved the last gloss before it
    while link is not None:
        glosses = list(link.glosses)
        if glosses:
            if extend is not None:
                glosses[-1] = DecodedGloss(glosses[-1].gloss, glosses[-1].id, glosses[-1].start, extend)
            parts.append(glosses)
            extend = link.extend_to
        elif extend is None:
            extend = link.extend_to
        link = link.parent
    return [gloss for part in reversed(parts) for gloss in part]


class StreamingDecoder:
    """Final output steps in (``push``), committed glosses out (``final``); ``tentative`` decodes the open segment
    with steps that may still change; ``finish`` gives the whole stream's labellings, best first.

    ``steps_decoded`` counts the output steps every decoder call has read: the work, which stays bounded per
    update however long the stream."""

    def __init__(self, decoder: CTCDecoder, rule: SegmentRule = SegmentRule(), top_k: int = 1):
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        if decoder.method == "greedy" and top_k > 1:
            raise ValueError(f"greedy decoding gives one answer: top_k {top_k} needs beam search")
        self.decoder, self.rule, self.top_k = decoder, rule, top_k
        self._blank = math.log(rule.blank_probability)
        self.final: list[DecodedGloss] = []  # the best labelling's glosses so far: only the last one's end moves
        self.score = 0.0
        self.steps = 0  # final steps pushed
        self.steps_decoded = 0
        self._open: list[np.ndarray] = []
        self._open_start = 0  # the open segment's first step
        self._open_signs = False  # whether the open segment holds a step that is not blank-dominated
        # The top_k best labellings as (score, chain), best first; the first is ``final``'s.
        self._labellings: list[tuple[float, _Link | None]] = [(0.0, None)]

    def push(self, log_probs: np.ndarray) -> int:
        """Final steps (n, V), in order; returns the index of the first final gloss that is new or whose end
        moved (``len(final)`` when none)."""
        changed = len(self.final)
        for row in np.asarray(log_probs, dtype=np.float32):
            self._open.append(row)
            blank = row[BLANK] >= self._blank
            if blank and self._open_signs:
                changed = min(changed, self._close(len(self._open)))
            elif not blank:
                self._open_signs = True
            if len(self._open) >= self.rule.max_steps:
                changed = min(changed, self._close(self._forced_cut()))
        self.steps += len(log_probs)
        return changed

    def _forced_cut(self) -> int:
        """Where a segment that reached the longest allowed closes: after its leading pause, else at its most
        blank step (inclusive)."""
        blanks = np.array([row[BLANK] for row in self._open])
        signing = np.flatnonzero(blanks < self._blank)
        if not len(signing):
            return len(blanks)
        if signing[0] > 0:
            return int(signing[0])
        return int(np.argmax(blanks)) + 1

    def _close(self, length: int) -> int:
        """Decode the open segment's first ``length`` steps and join them to the labellings."""
        segment = np.stack(self._open[:length])
        alternatives = self._decode(segment)
        offset = self._open_start
        self._open, self._open_start = self._open[length:], offset + length
        self._open_signs = any(row[BLANK] < self._blank for row in self._open)
        joined = []
        for score, link in self._labellings:
            for alternative in alternatives:
                joined.append((score + alternative.score, self._join(link, alternative, offset)))
        self._labellings = self._distinct(joined)
        changed = len(self.final)
        best = alternatives[0]
        glosses = self._shifted(best, offset)
        if glosses and self.final and self._merges(self.final[-1].id, glosses[0].id):
            changed = len(self.final) - 1
            self.final[-1] = DecodedGloss(self.final[-1].gloss, self.final[-1].id, self.final[-1].start,
                                          glosses[0].end)
            glosses = glosses[1:]
        self.final += glosses
        self.score += best.score
        return changed

    def _decode(self, segment: np.ndarray) -> list[Hypothesis]:
        self.steps_decoded += len(segment)
        (alternatives,) = self.decoder.decode_alternatives(segment[None], [len(segment)], self.top_k)
        return alternatives

    def _merges(self, last_id: int | None, first_id: int) -> bool:
        return self.decoder.merge_repeats and last_id == first_id

    @staticmethod
    def _shifted(hypothesis: Hypothesis, offset: int) -> list[DecodedGloss]:
        return [DecodedGloss(gloss, index, offset + start, offset + end) for gloss, index, start, end in
                zip(hypothesis.glosses, hypothesis.ids, hypothesis.steps, hypothesis.ends, strict=True)]

    def _join(self, link: _Link | None, hypothesis: Hypothesis, offset: int) -> _Link | None:
        if self.top_k == 1:
            return None  # one labelling: ``final`` holds it
        glosses = self._shifted(hypothesis, offset)
        last_id = link.last_id if link is not None else None
        extend_to = None
        if glosses and self._merges(last_id, glosses[0].id):
            extend_to, glosses = glosses[0].end, glosses[1:]
        if not glosses and extend_to is None:
            return link
        key = link.key if link is not None else 0
        for gloss in glosses:
            key = (key * _HASH_BASE + gloss.id) % _HASH_MODULUS
        return _Link(link, tuple(glosses), extend_to, glosses[-1].id if glosses else last_id, key)

    def _distinct(self, candidates: list[tuple[float, _Link | None]]) -> list[tuple[float, _Link | None]]:
        """The ``top_k`` best candidates of distinct labellings, best first (the first of equal scores kept)."""
        kept, seen = [], set()
        for score, link in heapq.nsmallest(len(candidates), candidates, key=lambda c: -c[0]):
            key = link.key if link is not None else 0
            if key not in seen:
                seen.add(key)
                kept.append((score, link))
                if len(kept) == self.top_k:
                    break
        return kept

    def tentative(self, log_probs: np.ndarray | None = None) -> list[DecodedGloss]:
        """The glosses of the open segment followed by steps that may still change (m, V): what follows
        ``final`` if the stream ended now (a gloss continuing the last final one is left out)."""
        rows = self._open + (list(np.asarray(log_probs, dtype=np.float32)) if log_probs is not None else [])
        if not rows:
            return []
        glosses = self._shifted(self._decode(np.stack(rows))[0], self._open_start)
        if glosses and self.final and self._merges(self.final[-1].id, glosses[0].id):
            glosses = glosses[1:]
        return glosses

    def finish(self) -> list[Hypothesis]:
        """Close the open segment; the whole stream's labellings, best first (up to ``top_k``, distinct)."""
        if self._open:
            self._close(len(self._open))
        if self.top_k == 1:
            return [_hypothesis(self.final, self.score)]
        return [_hypothesis(_materialise(link), score) for score, link in self._labellings]


def _hypothesis(glosses: list[DecodedGloss], score: float) -> Hypothesis:
    return Hypothesis([g.gloss for g in glosses], [g.id for g in glosses], [g.start for g in glosses],
                      [g.end for g in glosses], float(score))


def decode_in_segments(decoder: CTCDecoder, log_probs: np.ndarray, rule: SegmentRule = SegmentRule(),
                       top_k: int = 1) -> list[Hypothesis]:
    """A whole output (T, V) decoded as a stream of it would be: the same segments, glosses and score."""
    stream = StreamingDecoder(decoder, rule, top_k)
    stream.push(log_probs)
    return stream.finish()
