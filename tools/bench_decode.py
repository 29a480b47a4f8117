"""`qslr bench decode`: CTC decodes per second of flashlight beam search, greedy and pyctcdecode."""

from __future__ import annotations

import logging
from pathlib import Path

import click
import numpy as np
import torch

from qslr.model import decoding_defaults
from qslr.model.decoding import CTCDecoder
from qslr.pipelines.progress import counting, progress_bar
from qslr.tools.benchmark_report import Rate, measure, report, with_ratios

log = logging.getLogger(__name__)


def synthetic_log_probs(batch: int, steps: int, classes: int, peaky: bool, seed: int) -> np.ndarray:
    """Log-probabilities like a trained CTC model's (peaky: blank mostly, a gloss spike now and then) or
    flat random ones, which make beam search work hardest."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 1.0, (batch, steps, classes)).astype(np.float32)
    if peaky:
        logits[:, :, 0] += 8.0
        spikes = rng.random((batch, steps)) < 0.3
        glosses = rng.integers(1, classes, (batch, steps))
        b, t = np.nonzero(spikes)
        logits[b, t, glosses[b, t]] += 12.0
    return torch.from_numpy(logits).log_softmax(-1).numpy()


def _pyctcdecode(classes: int, beam_size: int):
    logging.getLogger("pyctcdecode").setLevel(logging.ERROR)  # its import warns that kenlm is missing
    try:
        from pyctcdecode import build_ctcdecoder
    except ImportError:
        return None
    # A trailing space makes each label a word of its own.
    decoder = build_ctcdecoder([""] + [f"G{i:04d} " for i in range(1, classes)])
    return lambda scores: decoder.decode_beams(scores, beam_width=beam_size)[0][0].split()


@click.command("decode")
@click.option("--steps", type=int, default=60, show_default=True, help="Output steps T' per utterance.")
@click.option("--classes", type=int, default=1296, show_default=True, help="Vocabulary size V with the blank.")
@click.option("--beam-size", type=int, default=decoding_defaults.BEAM_SIZE, show_default=True)
@click.option("--beam-size-token", type=int, default=decoding_defaults.BEAM_SIZE_TOKEN, show_default=True)
@click.option("--utterances", type=int, default=64, show_default=True, help="Utterances per timed repeat.")
@click.option("--repeats", type=int, default=5, show_default=True)
@click.option("--input", "kind", type=click.Choice(["peaky", "uniform"]), default="peaky", show_default=True)
@click.option("--json-out", type=click.Path(dir_okay=False, path_type=Path), default=Path("bench-results/decode.json"),
              show_default=True)
def bench_decode(steps: int, classes: int, beam_size: int, beam_size_token: int, utterances: int, repeats: int,
                 kind: str, json_out: Path) -> None:
    """Decodes/s on one CPU core, all contenders on the same log-probabilities in one run."""
    torch.set_num_threads(1)
    scores = synthetic_log_probs(utterances, steps, classes, kind == "peaky", seed=0)
    lengths = [steps] * utterances
    vocab = {f"G{i:04d}": i for i in range(1, classes)}
    beam = CTCDecoder(vocab, "beam", "flashlight", beam_size, beam_size_token)
    greedy = CTCDecoder(vocab, "greedy")
    contenders = {
        "flashlight beam": lambda: len(beam.decode(scores, lengths)),
        "greedy": lambda: len(greedy.decode(scores, lengths)),
    }
    pyctc = _pyctcdecode(classes, beam_size)
    if pyctc is not None:
        contenders["pyctcdecode beam"] = lambda: len([pyctc(s) for s in scores])
    else:
        log.warning("pyctcdecode is not installed: its row is left out")
    with progress_bar("decodes") as progress:
        task = progress.add_task("decoding", total=len(contenders) * (1 + repeats) * utterances)  # 1: the warm-up
        rates = [Rate(name, measure(counting(work, progress, task), repeats)) for name, work in contenders.items()]
    reference = [h.glosses for h in beam.decode(scores, lengths)]
    agreement = {"greedy": np.mean([h.glosses == r for h, r in zip(greedy.decode(scores, lengths), reference,
                                                                   strict=True)])}
    if pyctc is not None:
        agreement["pyctcdecode beam"] = np.mean([pyctc(s) == r for s, r in zip(scores, reference, strict=True)])
    settings = {"steps": steps, "classes": classes, "beam_size": beam_size, "beam_size_token": beam_size_token,
                "utterances": utterances, "repeats": repeats, "input": kind, "threads": 1}
    report(f"CTC decoding, T'={steps}, V={classes}, beam {beam_size}, {kind} input", "decodes/s",
           with_ratios(rates, "flashlight beam"), "flashlight beam", settings, json_out,
           notes={"agreement_with_flashlight": {k: float(v) for k, v in agreement.items()}})
    for name, value in agreement.items():
        click.echo(f"{name}: same glosses as flashlight beam on {100 * value:.0f} % of utterances")
