"""Running NIST sclite (Debian package sctk) on a CTM and an STM, and reading its per-utterance counts."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from qslr.train.scoring.alignment import Counts

# Debian installs the binary outside PATH and puts a `sctk` dispatcher on it.
KNOWN_LOCATIONS = ("/usr/lib/sctk/bin/sclite",)


class ScliteNotFoundError(FileNotFoundError):
    pass


def find_sclite() -> Path:
    explicit = os.environ.get("QSLR_SCLITE")
    candidates = [explicit] if explicit else [shutil.which("sclite"), *KNOWN_LOCATIONS]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    raise ScliteNotFoundError(
        "sclite not found (looked at $QSLR_SCLITE, PATH and /usr/lib/sctk/bin); install Debian's 'sctk' package "
        "or use --scorer python")


_FILE = re.compile(r"^File: (\S+)", re.MULTILINE)
_SCORES = re.compile(r"^Scores: \(#C #S #D #I\) (\d+) (\d+) (\d+) (\d+)", re.MULTILINE)


def run_sclite(hypothesis_ctm: Path, reference_stm: Path) -> dict[str, Counts]:
    """Per-utterance counts from sclite's alignment dump (``-o pra``)."""
    binary = find_sclite()
    command = [str(binary), "-h", str(hypothesis_ctm), "ctm", "-r", str(reference_stm), "stm", "-f", "0",
               "-o", "pra", "stdout"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"sclite failed on {hypothesis_ctm} / {reference_stm}: {detail[0]}")
    files = _FILE.findall(result.stdout)
    scores = _SCORES.findall(result.stdout)
    if not files or len(files) != len(scores):
        raise RuntimeError(f"could not read sclite's alignment report for {hypothesis_ctm}")
    per_utterance: dict[str, Counts] = {}
    for utterance, (c, s, d, i) in zip(files, scores, strict=True):
        per_utterance[utterance] = per_utterance.get(utterance, Counts()) + Counts(int(c), int(s), int(d), int(i))
    return per_utterance
