"""`qslr bench train`: training clips/s and frames/s per process, DALI against the reference loader, and one
process against several, with the share of each step spent waiting for data."""

from __future__ import annotations

import logging
import subprocess
import sys
import tempfile
from pathlib import Path

import click

from qslr.pipelines.loader_choices import LOADERS
from qslr.pipelines.progress import progress_bar
from qslr.pipelines.synthetic.generator import generate_corpus
from qslr.pipelines.synthetic.spec import SynthSpec
from qslr.tools.benchmark_report import Rate, report
from qslr.train.metrics_log import read_metrics

log = logging.getLogger(__name__)


def _train(root: Path, work: Path, loader: str, nproc: int, steps: int, device: str, extra: tuple[str, ...]) -> dict:
    overrides = ["--config", "synthetic", f"data.root={root}", f"train.work_dir={work}", f"data.loader={loader}",
                 f"train.max_steps={steps}", "train.epochs=1000", "train.eval_interval=1000", f"train.device={device}",
                 *extra]
    if nproc > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                   "-m", "qslr.train", *overrides]
    else:
        command = [sys.executable, "-m", "qslr.train", *overrides]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        # Its last line says what went wrong (the exception, or torchrun's summary); `qslr -v` shows the rest.
        last = next((line for line in reversed(result.stderr.splitlines()) if line.strip()), "no output")
        log.info("training with %s, %d process(es):\n%s", loader, nproc, result.stderr)
        raise click.ClickException(f"training with {loader}, {nproc} process(es) failed: {last.strip()}")
    rows = [r for r in read_metrics(work / "metrics.csv") if r["epoch"] != "0"] or read_metrics(work / "metrics.csv")
    # Epochs after the first (warm-up) when there are any; rank 0's rates stand for each process.
    frames = sum(float(r["frames_per_s"]) for r in rows) / len(rows)
    clips = sum(float(r["clips_per_s"]) for r in rows) / len(rows)
    wait = sum(float(r["data_wait_fraction"]) for r in rows) / len(rows)
    return {"frames_per_s": frames, "clips_per_s": clips, "data_wait_fraction": wait, "epochs": len(rows)}


@click.command("train")
@click.option("--data", "root", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="A prepared dataset [default: a 240-video synthetic corpus made for the run].")
@click.option("--steps", type=int, default=90, show_default=True, help="Optimiser steps per run.")
@click.option("--nproc", "process_counts", type=int, multiple=True, default=(1, 2), show_default=True)
@click.option("--loader", "loaders", type=click.Choice(LOADERS), multiple=True, default=LOADERS, show_default=True)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--json-out", type=click.Path(dir_okay=False, path_type=Path), default=Path("bench-results/train.json"),
              show_default=True)
@click.argument("overrides", nargs=-1)
def bench_train(root: Path | None, steps: int, process_counts: tuple[int, ...], loaders: tuple[str, ...], device: str,
                json_out: Path, overrides: tuple[str, ...]) -> None:
    """Per-process training throughput of the `synthetic` preset (OVERRIDES apply to every run)."""
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="qslr-bench-train-") as tmp:
        if root is None:
            root = Path(tmp) / "corpus"
            generate_corpus(SynthSpec(videos=240, vocab=30, max_glosses=8), root, show_progress=False)
        runs = [(loader, nproc) for loader in loaders for nproc in process_counts]
        with progress_bar("runs") as progress:
            task = progress.add_task("training", total=len(runs))
            for loader, nproc in runs:
                name = f"{loader}, {nproc} process{'es' if nproc > 1 else ''}"
                progress.update(task, description=f"training ({name})")
                results[name] = _train(root, Path(tmp) / name.replace(", ", "-").replace(" ", ""), loader, nproc,
                                       steps, device, overrides)
                progress.advance(task)
    baseline = next(iter(results))
    rates = [Rate(name, [r["frames_per_s"]]) for name, r in results.items()]
    for rate in rates:
        rate.ratio = rate.median / results[baseline]["frames_per_s"]
    report(f"Training throughput per process ({device})", "frames/s", rates, baseline,
           {"steps": steps, "process_counts": list(process_counts), "loaders": list(loaders), "device": device,
            "overrides": list(overrides)}, json_out, notes=results)
    for name, r in results.items():
        click.echo(f"{name}: {r['clips_per_s']:.1f} clips/s per process, waiting for data "
                   f"{100 * r['data_wait_fraction']:.1f} % of step time")
