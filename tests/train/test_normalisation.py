"""The Phoenix gloss rules: one case per rule, and the whole table against sed and perl themselves."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import pytest

from qslr.pipelines.gloss_normalisation import (
    PHOENIX_RULES,
    apply_phoenix_rules,
    normalise_phoenix_gloss,
    normalise_phoenix_sentence,
)

RULES_SCRIPT = Path(__file__).resolve().parents[1] / "resources" / "phoenix_rules.sh"

# (rule numbers of docs/original_vac.md, "Scoring", annotation, normalised reference)
CASES = [
    ("1", "loc-NORD REGEN", "NORD REGEN"),
    ("2", "cl-KOMMEN", "KOMMEN"),
    ("3", "qu-WAS", "WAS"),
    ("4", "poss-MEIN", "MEIN"),
    ("5", "lh-SONNE", "SONNE"),
    ("6", "S0NNE SCHEINEN", "SONNE SCHEINEN"),
    ("7", "HABEN2 REGEN", "HABEN REGEN"),
    ("8", "__EMOTION__ REGEN", "REGEN"),
    ("9", "__PU__ REGEN", "REGEN"),
    ("10", "__LEFTHAND__ REGEN", "REGEN"),
    ("11", "WIE AUSSEHEN MORGEN", "WIE-AUSSEHEN MORGEN"),
    ("12", "ZEIGEN KARTE", "ZEIGEN-BILDSCHIRM KARTE"),
    ("12 (no word boundary)", "ANZEIGEN HEUTE", "ANZEIGEN-BILDSCHIRM HEUTE"),
    ("13", "KARTE ZEIGEN", "KARTE ZEIGEN-BILDSCHIRM"),
    ("14", "A B REGEN", "A+B REGEN"),
    ("15", "REGEN S H NORD", "REGEN S+H NORD"),
    ("16-18", "REGEN A B C D NORD", "REGEN A+B+C+D NORD"),
    ("14-18 together", "A B C D", "A B+C+D"),
    ("19", "REGEN SCH A NORD", "REGEN SCH+A NORD"),
    ("20", "REGEN NN A NORD", "REGEN NN+A NORD"),
    ("21", "REGEN A NN NORD", "REGEN A+NN NORD"),
    ("22", "REGEN A B", "REGEN A+B"),
    ("23", "SUEDOSTRAUM REGEN", "SUEDOST REGEN"),
    ("24", "REGEN-PLUSPLUS STARK", "REGEN STARK"),
    ("25-28", "WOLKE WOLKE REGEN", "WOLKE REGEN"),
    ("25-28 (three in a row)", "REGEN REGEN REGEN", "REGEN"),
    ("29", "__EPENTHESIS__ REGEN", "REGEN"),
    ("__ON__/__OFF__ stay", "__ON__ REGEN __OFF__", "__ON__ REGEN __OFF__"),
]


def test_the_table_has_every_rule_of_the_script():
    assert len(PHOENIX_RULES) == 23  # rules 1-28, with 16-18 and 25-28 as repeated entries


@pytest.mark.parametrize("rule, annotation, expected", CASES, ids=[c[0] for c in CASES])
def test_each_rule(rule, annotation, expected):
    assert normalise_phoenix_sentence(annotation) == expected


@pytest.mark.parametrize("gloss, expected", [
    ("loc-NORD", "NORD"), ("__PU__", ""), ("__EPENTHESIS__", ""), ("ZEIGEN", "ZEIGEN-BILDSCHIRM"),
    ("HABEN2", "HABEN"), ("__ON__", "__ON__"), ("A", "A"), ("SUEDOSTRAUM", "SUEDOST"),
])
def test_single_hypothesis_glosses_as_on_a_ctm_line(gloss, expected):
    assert normalise_phoenix_gloss(gloss) == expected


def test_rules_equal_sed_and_perl_on_random_sentences():
    rng = random.Random(4)
    pool = ["A", "B", "S", "H", "NN", "SCH", "REGEN", "WOLKE", "ZEIGEN", "WIE", "AUSSEHEN", "loc-NORD", "cl-X",
            "__PU__", "__ON__", "__OFF__", "S0NNE", "HABEN2", "SUEDOSTRAUM", "SONNE-PLUSPLUS", "poss-MEIN", "IX"]
    sentences = [" ".join(rng.choice(pool) for _ in range(rng.randint(1, 12))) for _ in range(500)]
    result = subprocess.run(["bash", str(RULES_SCRIPT)], input="\n".join(sentences) + "\n", capture_output=True,
                            text=True, check=True)
    expected = result.stdout.splitlines()
    assert len(expected) == len(sentences)
    for sentence, reference in zip(sentences, expected, strict=True):
        assert apply_phoenix_rules(sentence) == reference, sentence
