"""Score a CTM of recognised glosses against an STM: normalise, fill [EMPTY], align, count per signer."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from qslr.pipelines.gloss_normalisation import NORMALISERS
from qslr.pipelines.stm import StmEntry, read_stm, write_stm
from qslr.train.scoring.alignment import Counts, align, correct_positions, count
from qslr.train.scoring.ctm import hypotheses_for, read_ctm, write_ctm
from qslr.train.scoring.sclite import run_sclite

SCORERS = ("python", "sclite")


@dataclass
class ScoreReport:
    scorer: str
    overall: Counts
    per_signer: dict[str, Counts]
    per_utterance: dict[str, Counts] = field(repr=False)

    def to_dict(self) -> dict:
        def row(c: Counts) -> dict:
            return {"ref_words": c.reference_words, "correct": c.correct, "substitutions": c.substitutions,
                    "deletions": c.deletions, "insertions": c.insertions, "errors": c.errors, "wer": round(c.wer, 4)}

        return {"scorer": self.scorer, "overall": row(self.overall),
                "per_signer": {signer: row(c) for signer, c in sorted(self.per_signer.items())}}

    def table(self) -> str:
        header = f"{'signer':<14}{'ref':>7}{'corr':>7}{'sub':>7}{'del':>7}{'ins':>7}{'WER %':>9}"
        lines = [header, "-" * len(header)]
        for name, c in [*sorted(self.per_signer.items()), ("overall", self.overall)]:
            lines.append(f"{name:<14}{c.reference_words:>7}{c.correct:>7}{c.substitutions:>7}{c.deletions:>7}"
                         f"{c.insertions:>7}{c.wer:>9.2f}")
        return "\n".join(lines)


def _load(hypothesis_ctm: Path, reference_stm: Path, normalisation: str
          ) -> tuple[dict[str, StmEntry], dict[str, list[str]]]:
    if normalisation not in NORMALISERS:
        raise ValueError(f"unknown normalisation {normalisation!r} (known: {', '.join(NORMALISERS)})")
    references = {entry.utterance: entry for entry in read_stm(reference_stm)}
    ctm = read_ctm(hypothesis_ctm)
    unknown = sorted(set(ctm) - set(references))
    if unknown:
        raise ValueError(f"{hypothesis_ctm}: utterance {unknown[0]!r} is not in {reference_stm}"
                         + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""))
    return references, hypotheses_for(references, ctm, NORMALISERS[normalisation])


def _per_signer(references: dict[str, StmEntry], per_utterance: dict[str, Counts]) -> dict[str, Counts]:
    signers: dict[str, Counts] = {}
    for utterance, counts in per_utterance.items():
        speaker = references[utterance].speaker
        signers[speaker] = signers.get(speaker, Counts()) + counts
    return signers


def score(hypothesis_ctm: str | Path, reference_stm: str | Path, normalisation: str = "phoenix2014",
          scorer: str = "python") -> ScoreReport:
    """WER of ``hypothesis_ctm`` against ``reference_stm`` (already normalised, as shipped or prepared)."""
    hypothesis_ctm, reference_stm = Path(hypothesis_ctm), Path(reference_stm)
    references, hypotheses = _load(hypothesis_ctm, reference_stm, normalisation)
    if scorer == "python":
        per_utterance = {u: count(align(references[u].words, hypotheses[u])) for u in references}
    elif scorer == "sclite":
        with tempfile.TemporaryDirectory(prefix="qslr-sclite-") as tmp:
            ctm, stm = Path(tmp) / "hyp.ctm", Path(tmp) / "ref.stm"
            write_ctm(ctm, ((u, hypotheses[u], None) for u in sorted(references)))
            write_stm(stm, (references[u] for u in sorted(references)))
            per_utterance = run_sclite(ctm, stm)
        missing = set(references) - set(per_utterance)
        if missing:
            raise RuntimeError(f"sclite reported no alignment for {len(missing)} utterance(s), e.g. {min(missing)!r}")
    else:
        raise ValueError(f"unknown scorer {scorer!r} (known: {', '.join(SCORERS)})")
    return ScoreReport(scorer, Counts.total(per_utterance.values()), _per_signer(references, per_utterance),
                       per_utterance)


@dataclass(frozen=True)
class BranchComparison:
    """VAC's overfitting metrics for the BiLSTM (primary) and conv (auxiliary) hypotheses of one split."""

    wer_primary: float
    wer_auxiliary: float
    war: float  # % of reference words the conv branch gets wrong and the BiLSTM gets right
    wdr: float  # % of reference words the conv branch gets right and the BiLSTM gets wrong


def compare_branches(primary_ctm: str | Path, auxiliary_ctm: str | Path, reference_stm: str | Path,
                     normalisation: str = "phoenix2014") -> BranchComparison:
    references, primary = _load(Path(primary_ctm), Path(reference_stm), normalisation)
    _, auxiliary = _load(Path(auxiliary_ctm), Path(reference_stm), normalisation)
    totals = {"primary": Counts(), "auxiliary": Counts()}
    war = wdr = 0
    for utterance, entry in references.items():
        primary_ops, auxiliary_ops = align(entry.words, primary[utterance]), align(entry.words, auxiliary[utterance])
        totals["primary"] += count(primary_ops)
        totals["auxiliary"] += count(auxiliary_ops)
        for p_ok, a_ok in zip(correct_positions(primary_ops), correct_positions(auxiliary_ops), strict=True):
            war += p_ok and not a_ok
            wdr += a_ok and not p_ok
    words = totals["primary"].reference_words or 1
    return BranchComparison(totals["primary"].wer, totals["auxiliary"].wer, 100 * war / words, 100 * wdr / words)
