"""`qslr bench recorded`: held-out clips re-recorded as phones and webcams store them (tools/recorded_videos.py),
recognised through `qslr recognise`'s code, a real server and the web page, and scored against the clips'
references beside the clips themselves, in the same run.

Each kind is recognised with the framing options a user would give it (a region for a small signer in a wide
picture, nothing otherwise: the model's centre crop). The baseline is the prepared clips as they are. WER is the
project's sclite-equivalent alignment, without normalisation (synthetic glosses need none).
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from qslr.deploy.frontends.recognise import LocalRecogniser, load_checkpoint_model
from qslr.pipelines.framing_options import FramingOptions
from qslr.pipelines.prepared import PreparedDataset
from qslr.pipelines.progress import progress_bar
from qslr.tools.bench_target import URL_OPTION, served, still_ready
from qslr.tools.benchmark_report import environment
from qslr.tools.recorded_videos import KINDS, Recording, record
from qslr.train.scoring.alignment import Counts, align, count

ORIGINAL = "original"
FRONT_ENDS = ("recognise", "server", "page")
# Answers a video with glosses, or raises for one it refuses.
Recognise = Callable[[Path, FramingOptions], list[str]]


@dataclass(frozen=True)
class KindResult:
    kind: str
    description: str
    clips: int
    wer: dict[str, float]  # front end -> WER %, the refused videos' references all deleted
    refused: dict[str, int]  # front end -> videos it refused
    framing: str  # what was done to the first clip, as the answers say it


def _record_job(job: tuple[Path, str, Path, float]) -> Recording:
    clip, kind, out, scale = job
    return record(clip, KINDS[kind], out, scale)


def _recordings(clips: Sequence[Path], kinds: Sequence[str], work: Path, scale: float, workers: int
                ) -> dict[str, list[Recording]]:
    """Every clip recorded as every kind, on ``workers`` processes."""
    jobs = [(clip, kind, work / kind / clip.stem, scale) for kind in kinds for clip in clips]
    for kind in kinds:
        (work / kind).mkdir(parents=True)
    # A fork server: this process has loaded PyTorch, whose threads a forked child would inherit stopped.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver")) as pool, \
            progress_bar("videos") as bar:
        task = bar.add_task(f"recording {len(clips)} clips as {len(kinds)} kinds", total=len(jobs))
        made = []
        for recording in pool.map(_record_job, jobs, chunksize=4):
            made.append(recording)
            bar.advance(task)
    return {kind: made[index * len(clips):(index + 1) * len(clips)] for index, kind in enumerate(kinds)}


def _page_answer(url: str, video: Path, options: FramingOptions) -> list[str]:
    query = {"name": video.name, "framing": options.framing or "", "region": str(options.region or "")}
    request = urllib.request.Request(f"{url}api/recognise?{urllib.parse.urlencode(query)}", video.read_bytes(),
                                     {"Content-Type": "application/octet-stream"})
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            return [gloss["gloss"] for gloss in json.loads(response.read())["glosses"]]
    except urllib.error.HTTPError as error:
        raise ValueError(json.loads(error.read()).get("error", str(error))) from None


def _score(references: Sequence[list[str]], videos: Sequence[Path], options: Sequence[FramingOptions],
           recognise: Recognise, advance: Callable[[], None]) -> tuple[float, int]:
    """WER % of ``videos`` against ``references``, and how many were refused (their references all deleted);
    ``advance`` is called after each video."""
    answers, refused = [], 0
    for video, option in zip(videos, options, strict=True):
        try:
            answers.append(recognise(video, option))
        except Exception:  # noqa: BLE001 - a refusal of any front end counts against it, whatever its type
            answers.append([])
            refused += 1
        advance()
    return Counts.total(count(align(ref, hyp)) for ref, hyp in zip(references, answers, strict=True)).wer, refused


def _table(results: Sequence[KindResult]) -> None:
    table = Table(title="WER % of held-out clips recorded as people record them (baseline: the clips as prepared)")
    for column in ("kind", "clips", *FRONT_ENDS, "x - original", "refused", "framing (first clip)"):
        table.add_column(column, justify="left" if column in ("kind", "framing (first clip)") else "right")
    base = results[0].wer["recognise"]
    for result in results:
        table.add_row(result.kind, str(result.clips), *(f"{result.wer[f]:.2f}" for f in FRONT_ENDS),
                      f"{result.wer['recognise'] - base:+.2f}", str(sum(result.refused.values())), result.framing)
    Console(width=160).print(table)


def _kinds(value: str) -> list[str]:
    kinds = [kind.strip() for kind in value.split(",") if kind.strip()] if value else list(KINDS)
    unknown = [kind for kind in kinds if kind not in KINDS]
    if unknown:
        raise click.BadParameter(f"unknown kinds {', '.join(unknown)} (known: {', '.join(KINDS)})",
                                 param_hint="--kinds")
    return kinds


@click.command("recorded")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Prepared dataset [default: the checkpoint's].")
@click.option("--split", default="test", show_default=True, help="Where the clips come from.")
@click.option("--clips", type=click.IntRange(min=1), default=None, help="The first N clips [default: all].")
@click.option("--kinds", default="", help="Comma-separated kinds [default: all]: " + ", ".join(KINDS) + ".")
@click.option("--scale", type=click.FloatRange(0.05, 1.0), default=0.2, show_default=True,
              help="Picture sizes as a share of 1080p (1.0: 1080x1920 portrait pictures).")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Processes recording the clips.")
@URL_OPTION
@click.option("--json-out", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None)
def bench_recorded(checkpoint: Path, data: Path | None, split: str, clips: int | None, kinds: str, scale: float,
                   workers: int, url: str | None, json_path: Path | None) -> None:
    """Clips recorded as phones and webcams store them: WER through recognise, server and page."""
    from qslr.deploy.frontends.web.app import create_app
    from qslr.deploy.frontends.web.in_thread import serving_in_thread
    from qslr.deploy.serving.client import CslrClient
    from qslr.deploy.serving.triton_repository import RepositorySettings, build_repository
    from qslr.train.checkpointing import load_trained

    chosen = _kinds(kinds)
    model = load_checkpoint_model(checkpoint)
    dataset = PreparedDataset(data if data is not None else load_trained(checkpoint).config.data.root)
    records = dataset.records(split)[:clips]
    references = [r.gloss_list() for r in records]
    paths = [dataset.video_path(r) for r in records]
    work = Path(tempfile.mkdtemp(prefix="qslr-bench-recorded-"))
    try:
        recordings = _recordings(paths, chosen, work, scale, workers)
        videos = {ORIGINAL: (paths, [FramingOptions()] * len(paths)),
                  **{kind: ([r.path for r in made], [r.options for r in made]) for kind, made in recordings.items()}}
        local = LocalRecogniser(model)
        decoding = local.options()
        with served(url, lambda: build_repository(checkpoint, work / "repository", RepositorySettings(),
                                                  model.height, model.width)) as address, \
                contextlib.closing(CslrClient(address, timeout=600)) as client, \
                serving_in_thread(create_app(lambda: CslrClient(address, timeout=600))) as page, \
                progress_bar("videos") as bar:
            front_ends: dict[str, Recognise] = {
                "recognise": lambda video, option: local.recognise(video, decoding, option).glosses,
                "server": lambda video, option: client.recognise_file(video, framing=option).glosses,
                "page": lambda video, option: _page_answer(page, video, option)}
            # Most of a run's time (every video through every front end): shown, as all long work is.
            task = bar.add_task(f"recognising {len(videos)} kinds through {len(front_ends)} front ends",
                                total=len(videos) * len(front_ends) * len(paths))
            results = []
            for kind, (kind_videos, options) in videos.items():
                scores = {name: _score(references, kind_videos, options, recognise, lambda: bar.advance(task))
                          for name, recognise in front_ends.items()}
                first = local.recognise(kind_videos[0], decoding, options[0]).framing
                results.append(KindResult(kind, KINDS[kind].description if kind in KINDS else "the prepared clips",
                                          len(kind_videos), {name: wer for name, (wer, _) in scores.items()},
                                          {name: refused for name, (_, refused) in scores.items()},
                                          first["summary"]))
            still_ready(address, "the recorded videos")
    finally:
        shutil.rmtree(work)
    _table(results)
    payload = {"title": "Videos as people record them", "checkpoint": str(checkpoint), "split": split,
               "scale": scale, "results": [asdict(r) for r in results], "environment": environment()}
    if json_path is not None:
        from qslr.pipelines.atomic_output import write_text_atomic

        write_text_atomic(json_path, json.dumps(payload, indent=1) + "\n")
