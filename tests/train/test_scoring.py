"""WER scoring: equal to NIST sclite on a generated suite, per-signer reports, [EMPTY], WAR/WDR, the CLI."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from click.testing import CliRunner

from qslr.pipelines.stm import StmEntry, write_stm
from qslr.tools.cli import cli
from qslr.train.scoring.alignment import Counts, align
from qslr.train.scoring.ctm import read_ctm, write_ctm
from qslr.train.scoring.sclite import ScliteNotFoundError, find_sclite
from qslr.train.scoring.score import compare_branches, score

WORDS = ["REGEN", "SONNE", "WOLKE", "NORD", "SUED", "A", "B", "IX", "__ON__", "__OFF__", "regen", "Wolke"]
HYPOTHESIS_EXTRAS = ["__PU__", "loc-NORD", "HABEN2", "ZEIGEN", "KALT"]


def random_case(rng: random.Random, folder: Path) -> tuple[Path, Path]:
    utterances = [f"utt{i:02d}" for i in range(rng.randint(1, 5))]
    references = [StmEntry(u, f"Signer{rng.randint(1, 3)}", tuple(rng.choice(WORDS) for _ in range(rng.randint(1, 14))))
                  for u in utterances]
    lines = []
    for utterance in utterances:
        if rng.random() < 0.1:
            continue  # no hypothesis at all: scored as [EMPTY]
        words = [rng.choice(WORDS + HYPOTHESIS_EXTRAS) for _ in range(rng.randint(0, 16))]
        starts = rng.sample(range(100), len(words))  # written out of time order on purpose
        lines += [f"{utterance} 1 {s / 100:.2f} 0.01 {w}\n" for s, w in zip(starts, words, strict=True)]
    rng.shuffle(lines)
    (folder / "hyp.ctm").write_text("".join(lines))
    write_stm(folder / "ref.stm", references)
    return folder / "hyp.ctm", folder / "ref.stm"


def test_python_scorer_equals_sclite_on_a_generated_suite(tmp_path):
    find_sclite()  # fails loudly: `make test` installs Debian's sctk
    rng = random.Random(2021)
    for case in range(220):
        folder = tmp_path / f"case{case}"
        folder.mkdir()
        hyp, ref = random_case(rng, folder)
        ours, theirs = score(hyp, ref, scorer="python"), score(hyp, ref, scorer="sclite")
        assert ours.per_utterance == theirs.per_utterance, f"case {case}"
        assert ours.overall.wer == pytest.approx(theirs.overall.wer)
        assert ours.per_signer == theirs.per_signer


def test_known_alignment_and_counts(tmp_path):
    write_stm(tmp_path / "ref.stm", [StmEntry("u1", "S1", ("A", "B", "C", "D")), StmEntry("u2", "S2", ("X", "Y")),
                                     StmEntry("u3", "S2", ("P",))])
    write_ctm(tmp_path / "hyp.ctm", [("u1", ["a", "X", "Y", "D"], None), ("u2", ["__PU__"], None)])
    report = score(tmp_path / "hyp.ctm", tmp_path / "ref.stm")
    assert report.per_utterance["u1"] == Counts(correct=2, substitutions=2)  # case-insensitive, as sclite
    # u2's only gloss is removed by normalisation and u3 has none: both become [EMPTY], a substitution.
    assert report.per_utterance["u2"] == Counts(substitutions=1, deletions=1)
    assert report.per_utterance["u3"] == Counts(substitutions=1)
    assert report.overall.wer == pytest.approx(100 * 5 / 7)
    assert report.per_signer["S2"] == Counts(substitutions=2, deletions=1)


def test_tie_breaking_follows_sclite():
    # Equal-cost alignments exist; sclite's choice has 5 errors, not 6.
    operations = align(["B", "E", "B", "B", "E"], ["A", "H", "B", "Z", "C", "E", "B"])
    assert "".join(op for op, _, _ in operations) == "SSCISCI"


def test_ctm_round_trip_and_bad_lines(tmp_path):
    write_ctm(tmp_path / "a.ctm", [("u1", ["X", "Y"], [3, 7]), ("u2", [], None)])
    assert (tmp_path / "a.ctm").read_text() == "u1 1 0.03 0.01 X\nu1 1 0.07 0.01 Y\n"
    assert read_ctm(tmp_path / "a.ctm") == {"u1": [(0.03, "X"), (0.07, "Y")]}
    (tmp_path / "b.ctm").write_text("u1 1 0.00 0.01 X\nu1 1 zero 0.01 Y\n")
    with pytest.raises(ValueError, match="b.ctm:2: start and duration must be numbers"):
        read_ctm(tmp_path / "b.ctm")


def test_a_hypothesis_for_an_unknown_utterance_is_an_error(tmp_path):
    write_stm(tmp_path / "ref.stm", [StmEntry("u1", "S1", ("A",))])
    write_ctm(tmp_path / "hyp.ctm", [("u9", ["A"], None)])
    with pytest.raises(ValueError, match="utterance 'u9' is not in"):
        score(tmp_path / "hyp.ctm", tmp_path / "ref.stm")


def test_missing_sclite_fails_loudly(tmp_path, monkeypatch):
    write_stm(tmp_path / "ref.stm", [StmEntry("u1", "S1", ("A",))])
    write_ctm(tmp_path / "hyp.ctm", [("u1", ["A"], None)])
    monkeypatch.setenv("QSLR_SCLITE", str(tmp_path / "no-sclite"))
    with pytest.raises(ScliteNotFoundError, match="sclite not found"):
        score(tmp_path / "hyp.ctm", tmp_path / "ref.stm", scorer="sclite")
    result = CliRunner().invoke(cli, ["eval", "score", "--hyp", str(tmp_path / "hyp.ctm"), "--ref",
                                      str(tmp_path / "ref.stm"), "--scorer", "sclite"])
    assert result.exit_code == 1 and "sclite not found" in result.output and "100" not in result.output


def test_war_and_wdr(tmp_path):
    write_stm(tmp_path / "ref.stm", [StmEntry("u1", "S1", ("A", "B", "C", "D"))])
    write_ctm(tmp_path / "seq.ctm", [("u1", ["A", "B", "C", "X"], None)])  # wrong on D
    write_ctm(tmp_path / "conv.ctm", [("u1", ["Y", "B", "C", "D"], None)])  # wrong on A
    result = compare_branches(tmp_path / "seq.ctm", tmp_path / "conv.ctm", tmp_path / "ref.stm")
    assert (result.wer_primary, result.wer_auxiliary, result.war, result.wdr) == (25.0, 25.0, 25.0, 25.0)


def test_score_command_json(tmp_path):
    write_stm(tmp_path / "ref.stm", [StmEntry("u1", "S1", ("A", "B")), StmEntry("u2", "S2", ("C",))])
    write_ctm(tmp_path / "hyp.ctm", [("u1", ["A", "B"], None), ("u2", ["D", "E"], None)])
    result = CliRunner().invoke(cli, ["eval", "score", "--hyp", str(tmp_path / "hyp.ctm"), "--ref",
                                      str(tmp_path / "ref.stm"), "--aux", str(tmp_path / "hyp.ctm"), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["overall"]["wer"] == pytest.approx(200 / 3) and data["per_signer"]["S1"]["wer"] == 0.0
    assert data["branches"]["war"] == 0.0
    table = CliRunner().invoke(cli, ["eval", "score", "--hyp", str(tmp_path / "hyp.ctm"), "--ref",
                                     str(tmp_path / "ref.stm")])
    assert "overall" in table.output and "66.67" in table.output
