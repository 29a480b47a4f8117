"""Decode a split with a model, write the CTM files, and score them with the project's scorer."""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from qslr.model.decoding import CTCDecoder, Hypothesis
from qslr.model.network import SLRModel
from qslr.pipelines.progress import progress_bar
from qslr.train.config import ExperimentConfig
from qslr.train.data import make_loader
from qslr.train.scoring.ctm import write_ctm
from qslr.train.scoring.score import BranchComparison, ScoreReport, compare_branches, score


@dataclass
class EvalResult:
    split: str
    report: ScoreReport
    branches: BranchComparison
    hypotheses: dict[str, Hypothesis]
    ctm: Path
    seconds: float

    @property
    def wer(self) -> float:
        return self.report.overall.wer


def amp_active(device: torch.device, amp: str) -> bool:
    """Whether ``train.amp`` runs on ``device``: on GPUs. A CPU trains in float32 whatever the preset says: the
    presets' AMP settings are for GPUs, and the demo's figures on CPUs were measured in float32."""
    return amp != "none" and device.type == "cuda"


def autocast(device: torch.device, amp: str):
    if not amp_active(device, amp):
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


@torch.no_grad()
def decode_split(model: SLRModel, config: ExperimentConfig, split: str, device: torch.device,
                 vocab: dict[str, int]) -> tuple[dict[str, Hypothesis], dict[str, Hypothesis]]:
    """(BiLSTM branch, conv branch) hypotheses per video id."""
    loader = make_loader(config, split, train=False, device=str(device), vocab=vocab)
    decoder = CTCDecoder(vocab, **config.decode.search())
    was_training = model.training
    model.eval()
    sequence: dict[str, Hypothesis] = {}
    conv: dict[str, Hypothesis] = {}
    try:
        with progress_bar("videos") as progress:
            task = progress.add_task(f"decoding {split}", total=loader.num_samples)
            for batch in loader:
                with autocast(device, config.train.amp):
                    output = model(batch.videos.to(device, non_blocking=True), batch.lengths.to(device))
                lengths = output.lengths.cpu()
                for branch, logits in ((sequence, output.sequence_logits), (conv, output.conv_logits)):
                    decoded = decoder.decode(logits.float().log_softmax(-1), lengths)
                    branch.update(zip(batch.ids, decoded, strict=True))
                progress.advance(task, len(batch.ids))
    finally:
        model.train(was_training)
    return sequence, conv


def evaluate(model: SLRModel, config: ExperimentConfig, split: str, device: torch.device, vocab: dict[str, int],
             out_dir: Path) -> EvalResult:
    start = time.perf_counter()
    sequence, conv = decode_split(model, config, split, device, vocab)
    out_dir.mkdir(parents=True, exist_ok=True)
    ctm, conv_ctm = out_dir / f"output-hypothesis-{split}.ctm", out_dir / f"output-hypothesis-{split}-conv.ctm"
    write_ctm(ctm, ((vid, h.glosses, h.steps) for vid, h in sorted(sequence.items())))
    write_ctm(conv_ctm, ((vid, h.glosses, h.steps) for vid, h in sorted(conv.items())))
    reference = Path(config.data.root) / f"{split}.stm"
    report = score(ctm, reference, config.eval.normalisation, config.eval.scorer)
    branches = compare_branches(ctm, conv_ctm, reference, config.eval.normalisation)
    return EvalResult(split, report, branches, sequence, ctm, time.perf_counter() - start)
