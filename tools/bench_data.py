"""`qslr bench data`: frames/s and clips/s of the DALI loader against the reference loader.

Each contender runs in a fresh process, so that its peak resident memory (its own and its workers')
can be reported apart from the other's.
"""

from __future__ import annotations

import multiprocessing
import resource
import tempfile
import time
from pathlib import Path

import click
import torch

from qslr.pipelines.augmentation import ClipSettings
from qslr.pipelines.clip_source import ClipSource
from qslr.pipelines.loaders import build_loader
from qslr.pipelines.progress import progress_bar
from qslr.pipelines.synthetic.generator import generate_corpus
from qslr.pipelines.synthetic.spec import SynthSpec
from qslr.tools.benchmark_report import Rate, report, with_ratios
from qslr.train.config import load_config


def _in_fresh_process(function, *args):
    """Run ``function(*args)`` in a spawned, non-daemonic process (it may start DataLoader workers)."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(sender, function, args))
    process.start()
    sender.close()
    try:
        ok, value = receiver.recv()
    except EOFError:
        ok, value = False, f"the benchmark process died (exit code {process.join() or process.exitcode})"
    process.join()
    if not ok:
        raise click.ClickException(value)
    return value


def _child(sender, function, args) -> None:
    try:
        sender.send((True, function(*args)))
    except Exception as exc:  # noqa: BLE001 - reported to the parent as one line
        sender.send((False, f"{type(exc).__name__}: {exc}"))


def _run(kind: str, root: str, split: str, settings: ClipSettings, train: bool, batch_size: int, workers: int,
         device: str, repeats: int, max_batches: int | None) -> dict:
    torch.set_num_threads(1)
    source = ClipSource.open(root, split, settings, train=train)
    loader = build_loader(kind, source, batch_size, shuffle=train, drop_last=False, workers=workers, device=device)
    frames_per_s, clips_per_s = [], []
    per_epoch = min(len(loader), max_batches or len(loader))
    with progress_bar("batches") as progress:
        task = progress.add_task(f"{kind} loader", total=(repeats + 1) * per_epoch)
        for epoch in range(repeats + 1):  # epoch 0 warms up
            loader.set_epoch(epoch)
            frames = clips = 0
            start = time.perf_counter()
            for index, batch in enumerate(loader):
                batch.videos.to(device, non_blocking=True)  # what training does first: counts for the reference one
                frames += batch.frames
                clips += len(batch)
                progress.advance(task)
                if max_batches and index + 1 >= max_batches:
                    break
            if device != "cpu":
                torch.cuda.synchronize()
            if epoch:
                elapsed = time.perf_counter() - start
                frames_per_s.append(frames / elapsed)
                clips_per_s.append(clips / elapsed)
    del loader
    # ru_maxrss is in KiB on Linux; children are the DataLoader workers (their largest, not their sum).
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss + \
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"frames_per_s": frames_per_s, "clips_per_s": clips_per_s, "peak_rss_mib": peak_kib / 1024}


@click.command("data")
@click.option("--data", "root", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="A prepared dataset [default: a 200-video synthetic corpus made for the run].")
@click.option("--config", "preset", default="synthetic", show_default=True, help="Preset giving crop and augmentation.")
@click.option("--split", default="train", show_default=True)
@click.option("--eval", "evaluation", is_flag=True, help="Centre crops, no augmentation.")
@click.option("--batch-size", type=int, default=None, help="[default: the preset's]")
@click.option("--workers", type=int, default=2, show_default=True, help="DALI threads = DataLoader processes.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--repeats", type=int, default=3, show_default=True, help="Timed epochs after a warm-up epoch.")
@click.option("--max-batches", type=int, default=None, help="Stop each epoch after this many batches.")
@click.option("--json-out", type=click.Path(dir_okay=False, path_type=Path), default=Path("bench-results/data.json"),
              show_default=True)
def bench_data(root: Path | None, preset: str, split: str, evaluation: bool, batch_size: int | None, workers: int,
               device: str, repeats: int, max_batches: int | None, json_out: Path) -> None:
    """DALI against the reference loader on the same dataset, plans and worker count, in one run."""
    config = load_config(preset)
    data = config.data
    settings = ClipSettings(data.crop_size, data.flip_prob, data.temporal_rescale, data.min_frames, data.max_frames,
                            tuple(config.model.temporal.kernels))
    with tempfile.TemporaryDirectory(prefix="qslr-bench-data-") as tmp:
        if root is None:
            root = Path(tmp) / "synthetic"
            generate_corpus(SynthSpec(videos=200), root, workers=workers, show_progress=False)
        results = {kind: _in_fresh_process(_run, kind, str(root), split, settings, not evaluation,
                                           batch_size or data.batch_size, workers, device, repeats, max_batches)
                   for kind in ("reference", "dali")}
    names = {"reference": "reference DataLoader", "dali": f"DALI ({'mixed' if device == 'cuda' else 'cpu'})"}
    rates = with_ratios([Rate(names[k], r["frames_per_s"]) for k, r in results.items()], names["reference"])
    clip_rates = with_ratios([Rate(names[k], r["clips_per_s"]) for k, r in results.items()], names["reference"])
    settings_json = {"dataset": str(root), "split": split, "train_augmentation": not evaluation, "workers": workers,
                     "device": device, "batch_size": batch_size or data.batch_size, "repeats": repeats,
                     "crop": data.crop_size}
    report(f"Data loading, {workers} workers/threads, {device}", "frames/s", rates, names["reference"], settings_json,
           json_out, notes={"clips_per_s": {r.name: r.median for r in clip_rates},
                            "peak_rss_mib": {names[k]: r["peak_rss_mib"] for k, r in results.items()}})
    for kind, result in results.items():
        click.echo(f"{names[kind]}: peak RSS {result['peak_rss_mib']:.0f} MiB")
