"""CTC decoding: greedy, and beam search with flashlight-text's lexicon-free decoder (ctcdecode optional).

Every result carries the glosses, the output steps where each one starts and ends, and a score. As in
the original (``merge_repeats``, the default), identical glosses that follow each other are merged even when a
blank separates them, so the system never outputs the same gloss twice in a row (the rule the published WERs
were measured with; a second peak of one long sign is then never an insertion). Without it, the rule is CTC's
own: a blank separates two equal glosses, which a video of several sentences needs where one ends
with the sign the next begins with. Beam search can also give its N best distinct labellings
(``decode_alternatives``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from qslr.model.decoding_defaults import (
    BACKEND,
    BEAM,
    BEAM_BACKENDS,
    BEAM_SIZE,
    BEAM_SIZE_TOKEN,
    GREEDY,
    MERGE_REPEATS,
    METHOD,
    METHODS,
)
from qslr.pipelines.prepared import BLANK_ID as BLANK

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Hypothesis:
    glosses: list[str]
    ids: list[int]
    steps: list[int]  # output step (of T') where each gloss starts
    ends: list[int]  # the last output step whose label on the decoded path is that gloss
    score: float  # log-probability of the best path (greedy) or the beam's score


# (ids, start steps, end steps, score) of one labelling
Candidate = tuple[list[int], list[int], list[int], float]


def collapse_path(path: Sequence[int], merge_repeats: bool = MERGE_REPEATS) -> tuple[list[int], list[int], list[int]]:
    """Frame-wise labels -> (ids, start steps, end steps): merge repeats, drop blanks, then (``merge_repeats``)
    merge repeats again."""
    ids: list[int] = []
    steps: list[int] = []
    previous = None
    for step, label in enumerate(path):
        if label != previous and label != BLANK and (not merge_repeats or not ids or ids[-1] != label):
            ids.append(int(label))
            steps.append(step)
        previous = label
    return ids, steps, gloss_ends(path, ids, steps)


def gloss_ends(labels: Sequence[int], ids: Sequence[int], starts: Sequence[int]) -> list[int]:
    """The last step of each gloss: within its segment (from its start to the next gloss's), the last step
    labelled with it, so that a gloss repeated across a blank and merged ends where its second run ends. A start
    the labels do not confirm (a backend that reports starts only) ends where it starts."""
    ends = []
    for index, (gloss, start) in enumerate(zip(ids, starts, strict=True)):
        stop = starts[index + 1] if index + 1 < len(starts) else len(labels)
        ends.append(max((step for step in range(start, stop) if labels[step] == gloss), default=start))
    return ends


def _merged_repeats(ids: Sequence[int], steps: Sequence[int]) -> tuple[list[int], list[int]]:
    kept_ids: list[int] = []
    kept_steps: list[int] = []
    for gloss, step in zip(ids, steps, strict=True):
        if not kept_ids or kept_ids[-1] != gloss:
            kept_ids.append(int(gloss))
            kept_steps.append(int(step))
    return kept_ids, kept_steps


class CTCDecoder:
    """Decode (B, T, V) log-probabilities with valid lengths (B,) into one Hypothesis per sample."""

    def __init__(self, vocab: Mapping[str, int], method: str = METHOD, backend: str = BACKEND,
                 beam_size: int = BEAM_SIZE, beam_size_token: int = BEAM_SIZE_TOKEN, beam_threshold: float = 50.0,
                 merge_repeats: bool = MERGE_REPEATS):
        self.id_to_gloss = {index: gloss for gloss, index in vocab.items()}
        self.num_classes = len(vocab) + 1
        self.method = method
        self.merge_repeats = merge_repeats
        if method == GREEDY:
            self._beam = None
        elif method == BEAM:
            self._beam = _BEAM_BACKENDS[backend](self.num_classes, beam_size, beam_size_token, beam_threshold)
        else:
            raise ValueError(f"unknown decoding method {method!r} ({' or '.join(METHODS)})")

    def _hypothesis(self, candidate: Candidate) -> Hypothesis:
        ids, steps, ends, score = candidate
        return Hypothesis([self.id_to_gloss[i] for i in ids], ids, steps, ends, float(score))

    def decode(self, log_probs: torch.Tensor | np.ndarray, lengths: torch.Tensor | np.ndarray | Sequence[int]
               ) -> list[Hypothesis]:
        return [alternatives[0] for alternatives in self.decode_alternatives(log_probs, lengths)]

    def decode_alternatives(self, log_probs: torch.Tensor | np.ndarray,
                            lengths: torch.Tensor | np.ndarray | Sequence[int], top_k: int = 1
                            ) -> list[list[Hypothesis]]:
        """Up to ``top_k`` distinct labellings per sample, best first (the first is ``decode``'s answer).
        Labellings are compared after collapsing, so two beam paths that read the same count once; fewer than
        ``top_k`` come back when the beam holds fewer. Greedy decoding has one answer only."""
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        if self._beam is None and top_k > 1:
            raise ValueError(f"greedy decoding gives one answer: top_k {top_k} needs beam search")
        scores = np.ascontiguousarray(_as_numpy(log_probs), dtype=np.float32)
        lengths = np.asarray(_as_numpy(lengths), dtype=np.int64)
        if scores.ndim != 3 or scores.shape[-1] != self.num_classes:
            raise ValueError(f"expected log-probabilities (B, T, {self.num_classes}), got {scores.shape}")
        if len(lengths) != len(scores) or (lengths < 0).any() or (lengths > scores.shape[1]).any():
            raise ValueError(f"lengths {lengths.tolist()} do not fit log-probabilities of shape {scores.shape}")
        if self._beam is None:
            return [[hypothesis] for hypothesis in self._greedy(scores, lengths)]
        return [[self._hypothesis(c) for c in self._beam.search(scores[i, :length], top_k, self.merge_repeats)]
                for i, length in enumerate(lengths)]

    def _greedy(self, scores: np.ndarray, lengths: np.ndarray) -> list[Hypothesis]:
        best = scores.argmax(-1)
        best_scores = np.take_along_axis(scores, best[..., None], -1)[..., 0]
        return [self._hypothesis((*collapse_path(best[i, :length].tolist(), self.merge_repeats),
                                  best_scores[i, :length].sum()))
                for i, length in enumerate(lengths)]


def _as_numpy(values):
    """A torch tensor's values as a float numpy array, other values as they are. torch is not imported for it: the
    served decoder (a python model, loaded at every server start) never needs it, and a tensor has imported it."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(values, torch.Tensor):
        return values.detach().float().cpu().numpy()
    return values


def distinct(candidates: Iterable[Candidate], top_k: int) -> list[Candidate]:
    """The first ``top_k`` candidates with distinct labellings, in the given (best first) order."""
    kept: list[Candidate] = []
    seen: set[tuple[int, ...]] = set()
    for candidate in candidates:
        if tuple(candidate[0]) not in seen:
            seen.add(tuple(candidate[0]))
            kept.append(candidate)
            if len(kept) == top_k:
                break
    return kept


class _FlashlightBeam:
    def __init__(self, num_classes: int, beam_size: int, beam_size_token: int, beam_threshold: float):
        from flashlight.lib.text.decoder import (
            CriterionType,
            LexiconFreeDecoder,
            LexiconFreeDecoderOptions,
            ZeroLM,
        )

        options = LexiconFreeDecoderOptions(
            beam_size=beam_size, beam_size_token=min(beam_size_token, num_classes), beam_threshold=beam_threshold,
            lm_weight=0.0, sil_score=0.0, log_add=True, criterion_type=CriterionType.CTC)
        # log_add sums the paths that reach the same labelling, as ctcdecode's prefix search does, instead
        # of keeping the best one. No language model, no word boundaries: the blank doubles as "silence".
        self._decoder = LexiconFreeDecoder(options, ZeroLM(), BLANK, BLANK, [])
        self._num_classes = num_classes

    def search(self, scores: np.ndarray, top_k: int = 1, merge_repeats: bool = MERGE_REPEATS) -> list[Candidate]:
        """The beam's distinct labellings, best first: the decoder returns its whole final beam sorted by
        score, one entry per path, and paths that collapse to the same labelling count once."""
        if len(scores) == 0:
            return [([], [], [], 0.0)]
        scores = np.ascontiguousarray(scores)
        results = self._decoder.decode(scores.ctypes.data, len(scores), self._num_classes)
        # The decoder adds a boundary token at both ends of each path.
        return distinct(((*collapse_path(list(r.tokens)[1:-1], merge_repeats), r.score) for r in results), top_k)


class _CtcdecodeBeam:
    def __init__(self, num_classes: int, beam_size: int, beam_size_token: int, beam_threshold: float):
        try:
            import ctcdecode
        except ImportError:
            raise ImportError("decode.backend=ctcdecode needs the ctcdecode package, which is not installed "
                              "(it cannot be built offline); use decode.backend=flashlight") from None
        # ctcdecode wants one character per label; the original used CJK code points too.
        labels = [chr(20000 + i) for i in range(num_classes)]
        self._decoder = ctcdecode.CTCBeamDecoder(labels, beam_width=beam_size, cutoff_top_n=beam_size_token,
                                                 blank_id=BLANK, num_processes=1, log_probs_input=True)

    def search(self, scores: np.ndarray, top_k: int = 1, merge_repeats: bool = MERGE_REPEATS) -> list[Candidate]:
        import torch  # ctcdecode's own dependency

        if len(scores) == 0:
            return [([], [], [], 0.0)]
        results, beam_scores, timesteps, out_lengths = self._decoder.decode(torch.from_numpy(scores)[None])
        # ctcdecode gives each label's first step but no path: a gloss ends at the last step of its segment
        # where it is the frame-wise best label.
        best = scores.argmax(-1).tolist()
        candidates = []
        for beam in range(results.shape[1]):
            n = int(out_lengths[0, beam])
            ids, steps = results[0, beam, :n].tolist(), timesteps[0, beam, :n].tolist()
            if merge_repeats:  # ctcdecode's labelling is CTC's own, a blank between two equal glosses kept
                ids, steps = _merged_repeats(ids, steps)
            # ctcdecode reports negative log-likelihood-like beam scores; flip them so higher is better.
            candidates.append((ids, steps, gloss_ends(best, ids, steps), -float(beam_scores[0, beam])))
        return distinct(candidates, top_k)


_BEAM_BACKENDS = dict(zip(BEAM_BACKENDS, (_FlashlightBeam, _CtcdecodeBeam), strict=True))
