"""The Phoenix gloss post-processing rules (the original's evaluation/slr_eval/preprocess.sh), in order.

They are written for whole CTM lines (``id 1 start duration GLOSS``) and for whole reference sentences;
the rules that join several tokens can fire only on sentences, since a CTM line holds one gloss.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    pattern: str
    replacement: str
    repeat: int = 1  # the script applies some rules several times in a row
    first_only: bool = False  # sed without the g flag

    def apply(self, text: str) -> str:
        compiled = re.compile(self.pattern)
        for _ in range(self.repeat):
            text = compiled.sub(self.replacement, text, count=1 if self.first_only else 0)
        return text


PHOENIX_RULES: tuple[Rule, ...] = (
    Rule(r"loc-", ""),
    Rule(r"cl-", ""),
    Rule(r"qu-", ""),
    Rule(r"poss-", ""),
    Rule(r"lh-", ""),
    Rule(r"S0NNE", "SONNE"),
    Rule(r"HABEN2", "HABEN"),
    Rule(r"__EMOTION__", ""),
    Rule(r"__PU__", ""),
    Rule(r"__LEFTHAND__", ""),
    Rule(r"WIE AUSSEHEN", "WIE-AUSSEHEN"),
    Rule(r"ZEIGEN ", "ZEIGEN-BILDSCHIRM "),
    Rule(r"ZEIGEN$", "ZEIGEN-BILDSCHIRM", first_only=True),
    Rule(r"^([A-Z]) ([A-Z][+ ])", r"\1+\2"),
    Rule(r"[ +]([A-Z]) ([A-Z]) ", r" \1+\2 "),
    Rule(r"([ +][A-Z]) ([A-Z][ +])", r"\1+\2", repeat=3),
    Rule(r"([ +]SCH) ([A-Z][ +])", r"\1+\2"),
    Rule(r"([ +]NN) ([A-Z][ +])", r"\1+\2"),
    Rule(r"([ +][A-Z]) (NN[ +])", r"\1+\2"),
    Rule(r"([ +][A-Z]) ([A-Z])$", r"\1+\2"),
    Rule(r"([A-Z][A-Z])RAUM", r"\1"),
    Rule(r"-PLUSPLUS", ""),
    Rule(r"(?<![\w-])(\b[A-Z]+(?![\w-])) \1(?![\w-])", r"\1", repeat=4),
)
# Lines (CTM) or tokens (sentences) still holding one of these are dropped.
DROPPED_MARKERS = ("__LEFTHAND__", "__EPENTHESIS__", "__EMOTION__")


def apply_phoenix_rules(text: str) -> str:
    for rule in PHOENIX_RULES:
        text = rule.apply(text)
    return text.rstrip()


def normalise_phoenix_sentence(glosses: str) -> str:
    """A whole annotation -> the normalised reference the original scores against."""
    text = apply_phoenix_rules(" ".join(glosses.split()))
    return " ".join(t for t in text.split() if not any(marker in t for marker in DROPPED_MARKERS))


def normalise_phoenix_gloss(gloss: str) -> str:
    """One hypothesis gloss, as preprocess.sh treats a CTM line; '' when the gloss is removed."""
    # A CTM line is "<id> 1 <start> <duration> <gloss>"; a neutral prefix keeps the line-anchored rules
    # from seeing the gloss at a line start, exactly as on the real line.
    line = apply_phoenix_rules("x 1 0 0 " + gloss)
    if any(marker in line for marker in DROPPED_MARKERS):
        return ""
    fields = line.split(maxsplit=4)
    return fields[4] if len(fields) == 5 else ""


NORMALISERS: dict[str, Callable[[str], str]] = {
    "phoenix2014": normalise_phoenix_gloss,
    "none": lambda gloss: gloss,
}
SENTENCE_NORMALISERS: dict[str, Callable[[str], str]] = {
    "phoenix2014": normalise_phoenix_sentence,
    "none": lambda glosses: " ".join(glosses.split()),
}
