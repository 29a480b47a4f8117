"""`qslr bench score`: time to score a split with QSLR's scorer against the sclite binary."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

import click

from qslr.pipelines.progress import counting, progress_bar
from qslr.pipelines.stm import StmEntry, write_stm
from qslr.tools.benchmark_report import Rate, measure, report, with_ratios
from qslr.train.scoring.ctm import write_ctm
from qslr.train.scoring.sclite import ScliteNotFoundError, find_sclite
from qslr.train.scoring.score import score


def write_split(folder: Path, utterances: int, vocabulary: int, seed: int) -> tuple[Path, Path]:
    """A Phoenix-sized split: ~11 reference glosses per utterance and a hypothesis with ~25 % errors."""
    rng = random.Random(seed)
    glosses = [f"GLOSS{i:04d}" for i in range(vocabulary)]
    references, hypotheses = [], []
    for i in range(utterances):
        words = [rng.choice(glosses) for _ in range(rng.randint(4, 18))]
        references.append(StmEntry(f"utt{i:05d}", f"Signer{i % 9 + 1:02d}", tuple(words)))
        hypothesis = []
        for word in words:
            roll = rng.random()
            if roll < 0.12:
                continue  # deletion
            hypothesis.append(rng.choice(glosses) if roll < 0.22 else word)
            if roll > 0.97:
                hypothesis.append(rng.choice(glosses))  # insertion
        hypotheses.append((f"utt{i:05d}", hypothesis, None))
    write_stm(folder / "ref.stm", references)
    write_ctm(folder / "hyp.ctm", hypotheses)
    return folder / "hyp.ctm", folder / "ref.stm"


@click.command("score")
@click.option("--utterances", type=click.IntRange(min=1), default=600, show_default=True,
              help="Utterances in the split.")
@click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--json-out", type=click.Path(dir_okay=False, path_type=Path), default=Path("bench-results/score.json"),
              show_default=True)
def bench_score(utterances: int, repeats: int, json_out: Path) -> None:
    """Splits scored per second (normalisation, [EMPTY] filling, alignment) by QSLR and by NIST sclite."""
    with tempfile.TemporaryDirectory(prefix="qslr-bench-score-") as tmp:
        hyp, ref = write_split(Path(tmp), utterances, 1295, seed=0)
        contenders = {"qslr python scorer": "python"}
        try:
            find_sclite()
            contenders["sclite"] = "sclite"
        except ScliteNotFoundError as exc:
            click.echo(f"{exc}: its row is left out", err=True)
        with progress_bar("splits") as progress:
            task = progress.add_task("scoring", total=len(contenders) * (1 + repeats))  # 1: the warm-up
            works = {name: counting(lambda s=scorer: score(hyp, ref, scorer=s) and 1, progress, task)
                     for name, scorer in contenders.items()}
            rates = [Rate(name, measure(work, repeats)) for name, work in works.items()]
        wers = {name: score(hyp, ref, scorer=scorer).overall.wer for name, scorer in contenders.items()}
    baseline = "sclite" if "sclite" in contenders else "qslr python scorer"
    report(f"Scoring a {utterances}-utterance split", "splits/s", with_ratios(rates, baseline), baseline,
           {"utterances": utterances, "repeats": repeats}, json_out,
           notes={"wer": wers, "seconds_per_split": {r.name: 1 / r.median for r in rates}})
    for rate in rates:
        click.echo(f"{rate.name}: {1 / rate.median:.3f} s per split, WER {wers[rate.name]:.2f} %")
