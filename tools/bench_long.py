"""`qslr bench long`: buffered recognition of long videos against recognising their clips one by one, on the same
clips in the same run.

Held-out clips are joined into long videos (`qslr data concat`'s joiner) of N clips each, for every N asked.
For each window and context, every long video is recognised in windows and scored against its clips' glosses in
order; the baseline is the same clips recognised one by one, their answers joined. It also reports where the
glosses of a long video sit against those of its clips shifted by their offsets, frames per second for long
videos against the clips alone, and the peak memory of recognising videos of a few minutes (each in a process of
its own, so that one's peak does not hide another's).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import click

from qslr.deploy.frontends.recognise import LocalModel, LocalRecogniser, load_checkpoint_model
from qslr.deploy.serving.buffered import WindowPlan
from qslr.deploy.serving.recognition import Recognition
from qslr.pipelines.long_videos import JoinedVideo, join_clips
from qslr.pipelines.prepared import PreparedDataset, VideoRecord
from qslr.pipelines.progress import progress_bar
from qslr.tools.bench_target import URL_OPTION, served
from qslr.tools.benchmark_report import environment, print_table
from qslr.train.scoring.alignment import CORRECT, Counts, align, count

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Accuracy:
    clips: int  # clips per long video
    videos: int
    window: int
    context: int
    wer: float  # buffered recognition of the long videos, percent
    wer_one_by_one: float  # the same clips recognised alone, their answers joined
    span_shift_s: float | None  # median |start of a gloss in the long video - its start in its clip + offset|
    span_matches: int  # glosses both answers agree on, where the shift was measured
    # Places where a clip ends with the gloss the next one begins with: CTC needs a pause (a blank) between
    # the two, which sentences joined without one may not show; recognised one by one, they are apart.
    boundary_repeats: int


def _tracked(items: Sequence, description: str, unit: str):
    with progress_bar(unit) as bar:
        yield from bar.track(items, description=description)


def _groups(records: Sequence[VideoRecord], size: int) -> list[Sequence[VideoRecord]]:
    return [records[start:start + size] for start in range(0, len(records) - size + 1, size)]


def _span_shifts(parts: Sequence[tuple[Recognition, float]], whole: Recognition) -> list[float]:
    """|start in the long video - (start in its clip + the clip's offset)| for each gloss both answers share."""
    glosses = [g for part, _ in parts for g in part.glosses]
    starts = [start + offset for part, offset in parts for start in part.start_s]
    shifts, i, j = [], 0, 0
    for op, ref, hyp in align(glosses, whole.glosses):
        if op == CORRECT:
            shifts.append(abs(whole.start_s[j] - starts[i]))
        i, j = i + (ref is not None), j + (hyp is not None)
    return shifts


_PEAK = ("import sys\n"
         "def peak_mib():\n"
         "    # VmHWM, not ru_maxrss: the latter keeps the peak of the process this one was forked from.\n"
         "    with open('/proc/self/status') as status:\n"
         "        line = next(l for l in status if l.startswith('VmHWM:'))\n"
         "    return int(line.split()[1]) / 1024\n")
_IN_WINDOWS = ("from qslr.deploy.frontends.recognise import LocalRecogniser, load_checkpoint_model\n"
               "from qslr.deploy.serving.buffered import WindowPlan\n"
               "from qslr.deploy.served_limits import ServedLimits\n"
               "plan = WindowPlan(*map(int, sys.argv[3:6]))\n"
               "limits = ServedLimits(max_seconds=3600)\n"
               "recogniser = LocalRecogniser(load_checkpoint_model(sys.argv[1]), limits, plan)\n"
               "recogniser.recognise(sys.argv[2], recogniser.options())\n")
# What recognising a video whole needs before the model sees it: every frame decoded and resized at once.
_WHOLE = ("from qslr.deploy.frontends.recognise import load_checkpoint_model\n"
          "from qslr.pipelines.video_io import read_video, resize_frames\n"
          "model = load_checkpoint_model(sys.argv[1])\n"
          "resize_frames(read_video(sys.argv[2])[0], model.height, model.width)\n")


def _peak_memory(checkpoint: Path, video: Path, plan: WindowPlan, whole: bool = False) -> float:
    """Peak resident memory (MiB) of a fresh process recognising ``video`` in windows (model loading included),
    or, ``whole``, decoding all of it at once."""
    script = _PEAK + (_WHOLE if whole else _IN_WINDOWS) + "print(peak_mib())\n"
    done = subprocess.run([sys.executable, "-c", script, str(checkpoint), str(video), str(plan.window),
                           str(plan.context), str(plan.stride)], capture_output=True, text=True, check=True)
    return float(done.stdout.split()[-1])


def _minutes_of_clips(dataset: PreparedDataset, records: Sequence[VideoRecord], minutes: float, out: Path
                      ) -> JoinedVideo:
    """The split's clips, in order and again from the first if need be, joined into a video of ``minutes``."""
    chosen, frames = [], 0
    for record in itertools.cycle(records):
        if frames >= minutes * 60 * record.fps:
            break
        chosen.append(record)
        frames += record.num_frames
    return join_clips(dataset, chosen, out)


def _served_latency(checkpoint: Path, frame_size: tuple[int, int], dataset: PreparedDataset,
                    records: Sequence[VideoRecord], work: Path, requests: int, minutes: float,
                    url: str | None) -> list[dict]:
    """Latency of an upload of ``minutes`` and of single clips on a real server (``url``, else one started on a
    repository of default settings), at concurrency 1 and 4."""
    from qslr.deploy.serving.client import CslrClient
    from qslr.deploy.serving.triton_repository import RepositorySettings, build_repository
    from qslr.tools.bench_serve import load_run

    long_video = work / "served-long.webm"
    _minutes_of_clips(dataset, records, minutes, long_video)
    clips = [dataset.video_path(r).read_bytes() for r in records[:16]]
    rows = []
    upload = f"{minutes:g}-minute video"
    with served(url, lambda: build_repository(checkpoint, work / "repository", RepositorySettings(), *frame_size)) \
            as address, contextlib.closing(CslrClient(address, timeout=600)) as single:
        uploads = {upload: [long_video.read_bytes()], "clips alone": clips}
        for name, videos in uploads.items():
            expected = [single.recognise_bytes(video).glosses for video in videos]
            for concurrency in (1, 4):
                count = requests if name != "clips alone" else max(requests, 4 * len(videos))
                result = load_run(address, videos, expected, concurrency, count, timeout=600)
                rows.append({"upload": name, "concurrency": concurrency, "requests": count,
                             **{key: result[key] for key in ("p50_ms", "p90_ms", "throughput", "wrong", "lost",
                                                             "failed")}})
    print_table(f"Served latency ({requests} uploads of {minutes:g} minutes at each concurrency)",
           ["upload", "concurrency", "p50 ms", "p90 ms", "uploads/s", "wrong/lost/failed"],
           [[r["upload"], str(r["concurrency"]), f"{r['p50_ms']:,.0f}", f"{r['p90_ms']:,.0f}",
             f"{r['throughput']:.2f}", f"{r['wrong']}/{r['lost']}/{r['failed']}"] for r in rows])
    return rows


def _recognise_all(recogniser: LocalRecogniser, videos: Sequence[Path]) -> tuple[list[Recognition], float]:
    """Answers, and the seconds they took."""
    options = recogniser.options()
    start = time.perf_counter()
    answers = [recogniser.recognise(video, options) for video in videos]
    return answers, time.perf_counter() - start



def _integers(value: str) -> list[int]:
    try:
        return [int(part) for part in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of integers") from None


@click.command("long")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Prepared dataset [default: the checkpoint's].")
@click.option("--split", default="test", show_default=True, help="Where the clips come from.")
@click.option("--clips", "clip_counts", default="5,10,30", show_default=True, help="Clips per long video.")
@click.option("--window", "windows", default="200,400", show_default=True, help="Window sizes (frames).")
@click.option("--context", "contexts", default="0,16,32,64", show_default=True, help="Context sizes (frames).")
@click.option("--repeats", type=int, default=3, show_default=True, help="Timed repeats (medians).")
@click.option("--memory-minutes", default="1,10", show_default=True,
              help="Durations (minutes) of the videos whose peak memory is measured; empty: none.")
@click.option("--serve-requests", type=int, default=8, show_default=True,
              help="Requests of a long video sent to a real server at each concurrency (1 and 4); 0: none.")
@click.option("--serve-minutes", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="How long that video is.")
@URL_OPTION
@click.option("--codec", type=click.Choice(["vp9", "h264"]), default="vp9", show_default=True)
@click.option("--json-out", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None)
def bench_long(checkpoint: Path, data: Path | None, split: str, clip_counts: str, windows: str, contexts: str,
               repeats: int, memory_minutes: str, serve_requests: int, serve_minutes: float, url: str | None,
               codec: str, json_path: Path | None) -> None:
    """Long videos in windows against their clips one by one: WER, gloss spans, frames/s, peak memory."""
    model = load_checkpoint_model(checkpoint)
    dataset = PreparedDataset(data if data is not None else _training_data(checkpoint))
    records = dataset.records(split)
    plans = [WindowPlan(w, c, model.windows.stride) for w, c in itertools.product(_integers(windows),
                                                                                _integers(contexts))
             if w - 2 * c >= model.windows.stride]
    work = Path(tempfile.mkdtemp(prefix="qslr-bench-long-"))
    log.info("joined videos in %s", work)

    clip_paths = [dataset.video_path(r) for r in records]
    answers, _ = _recognise_all(LocalRecogniser(model), clip_paths)
    by_id = dict(zip((r.id for r in records), answers, strict=True))
    joined = _joined_videos(dataset, records, _integers(clip_counts), codec, work)
    accuracy = _accuracy(model, plans, joined, by_id, split, len(records))
    speed = _speed(model, records, clip_paths, joined, repeats)
    memory = _memory(checkpoint, dataset, records, _integers(memory_minutes) if memory_minutes else [],
                     model.windows, work)
    latency = _served_latency(checkpoint, (model.height, model.width), dataset, records, work, serve_requests,
                              serve_minutes, url) if serve_requests else []
    shutil.rmtree(work)
    payload = {"title": "Long videos: buffered recognition against clips one by one", "checkpoint": str(checkpoint),
               "split": split, "accuracy": [asdict(a) for a in accuracy], "speed": speed, "memory": memory,
               "served": latency,
               "environment": environment()}
    if json_path is not None:
        from qslr.pipelines.atomic_output import write_text_atomic

        write_text_atomic(json_path, json.dumps(payload, indent=1) + "\n")


def _training_data(checkpoint: Path) -> Path:
    from qslr.train.checkpointing import load_trained

    return Path(load_trained(checkpoint).config.data.root)


def _joined_videos(dataset: PreparedDataset, records: Sequence[VideoRecord], sizes: Sequence[int], codec: str,
                   work: Path) -> dict[int, list[tuple[Path, JoinedVideo]]]:
    """For each size, the split's clips joined ``size`` at a time into long videos under ``work``."""
    joined: dict[int, list[tuple[Path, JoinedVideo]]] = {}
    for size in sizes:
        joined[size] = []
        for index, group in enumerate(_tracked(_groups(records, size), f"joining {size}-clip videos", "videos")):
            path = work / f"{size}-{index}.{'webm' if codec == 'vp9' else 'mp4'}"
            joined[size].append((path, join_clips(dataset, group, path, codec)))
    return joined


def _accuracy(model: LocalModel, plans: Sequence[WindowPlan], joined: dict[int, list[tuple[Path, JoinedVideo]]],
              by_id: dict[str, Recognition], split: str, clips: int) -> list[Accuracy]:
    """WER of the long videos recognised in windows with each plan, against their clips recognised one by one."""
    accuracy = []
    for size, videos in joined.items():
        if not videos:
            raise click.UsageError(f"the {split} split has {clips} clips, fewer than {size}")
        boundary_repeats = sum(a.glosses.split()[-1:] == b.glosses.split()[:1]
                               for _, v in videos for a, b in itertools.pairwise(v.parts))
        one_by_one = Counts.total(count(align(v.glosses.split(), [g for p in v.parts for g in by_id[p.id].glosses]))
                                  for _, v in videos)
        for plan in _tracked(plans, f"{size}-clip videos", "plans"):
            recogniser = LocalRecogniser(model, windows=plan)
            results, _ = _recognise_all(recogniser, [path for path, _ in videos])
            counts = Counts.total(count(align(v.glosses.split(), r.glosses))
                                  for (_, v), r in zip(videos, results, strict=True))
            shifts = [shift for (_, v), r in zip(videos, results, strict=True)
                      for shift in _span_shifts([(by_id[p.id], p.start_s) for p in v.parts], r)]
            accuracy.append(Accuracy(size, len(videos), plan.window, plan.context, counts.wer, one_by_one.wer,
                                     statistics.median(shifts) if shifts else None, len(shifts), boundary_repeats))
    print_table(f"WER of long videos of {split} clips: windows against the clips one by one",
           ["clips a video", "videos", "window", "context", "WER %", "one by one %", "span shift s", "glosses",
            "boundary repeats"],
           [[str(a.clips), str(a.videos), str(a.window), str(a.context), f"{a.wer:.2f}", f"{a.wer_one_by_one:.2f}",
             "-" if a.span_shift_s is None else f"{a.span_shift_s:.3f}", str(a.span_matches), str(a.boundary_repeats)]
            for a in accuracy])
    return accuracy


def _speed(model: LocalModel, records: Sequence[VideoRecord], clip_paths: Sequence[Path],
           joined: dict[int, list[tuple[Path, JoinedVideo]]], repeats: int) -> dict:
    """Frames/s of the longest videos in the checkpoint's windows against the clips alone, medians of ``repeats``
    runs taken in turn."""
    long_videos = [path for path, _ in joined[max(joined)]]
    short_frames = sum(r.num_frames for r in records)
    long_frames = sum(v.frames for _, v in joined[max(joined)])
    short_rates, long_rates = [], []
    alone, recogniser = LocalRecogniser(model), LocalRecogniser(model, windows=model.windows)
    for _ in range(repeats):
        short_rates.append(short_frames / _recognise_all(alone, clip_paths)[1])
        long_rates.append(long_frames / _recognise_all(recogniser, long_videos)[1])
    speed = {"short_clips_frames_per_s": statistics.median(short_rates),
             "long_videos_frames_per_s": statistics.median(long_rates),
             "long_clips": max(joined), "window": model.windows.window, "context": model.windows.context}
    speed["ratio"] = speed["long_videos_frames_per_s"] / speed["short_clips_frames_per_s"]
    print_table(f"Frames/s, medians of {repeats}", ["videos", "frames/s", "x clips alone"],
           [[f"{len(records)} clips alone", f"{speed['short_clips_frames_per_s']:,.0f}", "1.00"],
            [f"{len(long_videos)} videos of {max(joined)} clips", f"{speed['long_videos_frames_per_s']:,.0f}",
             f"{speed['ratio']:.2f}"]])
    return speed


def _memory(checkpoint: Path, dataset: PreparedDataset, records: Sequence[VideoRecord], minutes: Sequence[int],
            plan: WindowPlan, work: Path) -> list[dict]:
    """Peak memory of recognising a clip and videos of ``minutes`` in windows, and of decoding each whole: a fresh
    process each, run side by side (one process's peak does not depend on another's)."""
    videos = []
    if minutes:
        clip = dataset.video_path(records[0])
        videos.append((records[0].num_frames / records[0].fps / 60, clip))
    for length in minutes:
        path = work / f"{length}-minutes.webm"
        video = _minutes_of_clips(dataset, records, length, path)
        videos.append((video.frames / video.fps / 60, path))
    with ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1))) as pool:
        peaks = list(pool.map(lambda job: _peak_memory(checkpoint, job[0], plan, whole=job[1]),
                              [(path, whole) for _, path in videos for whole in (False, True)]))
    memory = [{"minutes": length, "peak_mib": peaks[2 * i], "whole_decode_peak_mib": peaks[2 * i + 1]}
              for i, (length, _) in enumerate(videos)]
    for _, path in videos[1:]:
        path.unlink()
    if memory:
        print_table("Peak resident memory (fresh process, model loaded)",
                    ["video", "in windows MiB", "decoded whole MiB"],
                    [[f"{m['minutes']:.2f} min", f"{m['peak_mib']:.0f}", f"{m['whole_decode_peak_mib']:.0f}"]
                     for m in memory])
    return memory
