"""`qslr bench live`: live recognition of continuous signing, sent in real time, to the local recogniser and through
a server.

The streams are the renderer's own (`qslr data synth --streams`): a held-out signer signing sentences in a row,
each gloss's sign frames known. Each stream is cut at the pause after its last whole sentence within --seconds and
sent at its frame rate, as a camera would (a 2-s queue in front of the recogniser: a frame that finds it full is
dropped and counted), N streams at once, each with its own recogniser thread. Measured:

- latency per gloss: from when the last frame of the gloss's sign was sent to when the gloss was first shown
  (tentative: any update showing it at its place; final: the update that made it final), for every gloss the final
  answer gets right;
- the real-time factor (the time a stream's recogniser was busy over the stream's length), frames dropped, and
  memory per stream (resident memory while the streams run, over what the process held before, per stream);
- the final answer's WER against the reference, how far it is from the buffered recognition of the same frames
  (offline, the local model), and the WER of the same sentences' clips recognised one by one.

Then the live windows: the same at one stream for each --sweep setting (how the defaults were chosen); and the
decoding work per update over one whole stream pushed as fast as it goes (it must not grow with the stream).
"""

from __future__ import annotations

import json
import logging
import queue
import statistics
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import click
import numpy as np

from qslr.deploy.frontends.live import LiveModel, LiveStream
from qslr.deploy.frontends.recognise import LocalModel, LocalRecogniser, load_checkpoint_model, load_onnx_model
from qslr.deploy.serving.buffered import WindowPlan, run_buffered
from qslr.deploy.serving.streaming import LiveUpdate
from qslr.pipelines.atomic_output import write_text_atomic
from qslr.pipelines.framing import frame_decoded
from qslr.pipelines.long_videos import JoinedVideo
from qslr.pipelines.prepared import PreparedDataset
from qslr.pipelines.sign_spans import SignSpan
from qslr.pipelines.video_io import VideoReader
from qslr.tools.bench_target import URL_OPTION, served
from qslr.tools.benchmark_report import environment, print_table
from qslr.train.scoring.alignment import CORRECT, Counts, align, count

log = logging.getLogger(__name__)
CAMERA_QUEUE_S = 2.0  # what a camera's frames may wait for the recogniser before they are dropped


@dataclass(frozen=True)
class _Stream:
    name: str
    reference: JoinedVideo
    frames: np.ndarray  # up to the cut
    fps: float
    signs: tuple[SignSpan, ...]  # the reference's signs before the cut
    clips: tuple[str, ...]  # the clips whose sentences it signs, before the cut

    @property
    def glosses(self) -> list[str]:
        return [sign.gloss for sign in self.signs]


def _stream(path: Path, seconds: float | None) -> _Stream:
    """A stream's frames up to the pause after its last sentence that ends within ``seconds`` (None: whole)."""
    reference = JoinedVideo.read(path)
    parts = [p for p in reference.parts if seconds is None or p.first_frame + p.frames <= seconds * reference.fps]
    if not parts:
        raise click.UsageError(f"{path}: no sentence ends within {seconds:g} s")
    last, following = parts[-1], reference.parts[len(parts)] if len(parts) < len(reference.parts) else None
    sentence_end = last.first_frame + last.frames
    cut = (sentence_end + following.first_frame) // 2 if following else reference.frames
    kept = []
    with VideoReader(path) as reader:
        for chunk in reader.chunks(256):
            kept.append(chunk[:cut - sum(len(k) for k in kept)])
            if sum(len(k) for k in kept) >= cut:
                break
    return _Stream(path.stem, reference, np.concatenate(kept), reference.fps,
                   tuple(s for s in reference.signs if s.stop <= sentence_end), tuple(p.id for p in parts))


@dataclass
class _Run:
    """One stream sent in real time: when each frame went, each update and when it came, the answer."""

    stream: _Stream
    sent_at: list[float] = field(default_factory=list)
    updates: list[tuple[float, LiveUpdate]] = field(default_factory=list)
    busy: float = 0.0
    dropped: int = 0
    answer: object = None
    finished_at: float = 0.0


def _send_and_recognise(live: LiveStream, stream: _Stream, paced: bool = True) -> _Run:
    run = _Run(stream)
    frames, fps = stream.frames, stream.fps
    waiting: queue.Queue = queue.Queue(int(CAMERA_QUEUE_S * fps))
    start = time.perf_counter()

    def send() -> None:
        for index in range(len(frames)):
            if paced:
                time.sleep(max(0.0, start + index / fps - time.perf_counter()))
            run.sent_at.append(time.perf_counter())
            try:
                waiting.put_nowait(index)
            except queue.Full:
                run.dropped += 1
        waiting.put(None)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    done = False
    while not done:
        taken = [waiting.get()]
        while not waiting.empty():
            taken.append(waiting.get_nowait())
        if taken[-1] is None:
            done, taken = True, taken[:-1]
        if taken:
            began = time.perf_counter()
            updates = live.feed(frames[taken], np.array(taken) / fps)
            run.busy += time.perf_counter() - began
            run.updates += [(time.perf_counter(), update) for update in updates]
    began = time.perf_counter()
    run.answer = live.finish(len(frames) / fps)
    run.finished_at = time.perf_counter()
    run.busy += run.finished_at - began
    return run


def _latencies(run: _Run) -> tuple[list[float], list[float]]:
    """(tentative, final) seconds from each correctly recognised gloss's last sign frame to its first showing."""
    final_at, shown = {}, []
    for moment, update in run.updates:
        for gloss in update.final:
            final_at.setdefault(gloss.index, moment)
        shown += [(moment, gloss.gloss, gloss.start_step) for gloss in (*update.final, *update.tentative)]
    answer, signs = run.answer, run.stream.signs
    tentative, final, i, j = [], [], 0, 0
    for op, ref, hyp in align(run.stream.glosses, answer.glosses):
        if op == CORRECT and signs[i].stop - 1 < len(run.sent_at):
            sign_end = run.sent_at[signs[i].stop - 1]
            made_final = final_at.get(j, run.finished_at)
            first = min([moment for moment, gloss, step in shown
                         if gloss == answer.glosses[j] and abs(step - answer.steps[j]) <= 2] + [made_final])
            tentative.append(first - sign_end)
            final.append(made_final - sign_end)
        i, j = i + (ref is not None), j + (hyp is not None)
    return tentative, final


def _resident_mib() -> float:
    with open("/proc/self/status") as status:
        return int(next(line for line in status if line.startswith("VmRSS:")).split()[1]) / 1024


def _at_once(model: LiveModel, streams: Sequence[_Stream], options) -> tuple[list[_Run], float]:
    """The streams sent together in real time; their runs, and the resident memory they added (MiB, peak)."""
    baseline, peak, running = _resident_mib(), [0.0], True

    def watch() -> None:
        while running:
            peak[0] = max(peak[0], _resident_mib())
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    runs: list = [None] * len(streams)

    def one(index: int) -> None:
        runs[index] = _send_and_recognise(model.stream(options, name=streams[index].name), streams[index])

    threads = [threading.Thread(target=one, args=(index,)) for index in range(len(streams))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    running = False
    watcher.join()
    return runs, max(0.0, peak[0] - baseline)


def _percentile(values: Sequence[float], share: float) -> float | None:
    return float(np.percentile(values, share)) if values else None


def _row(target: str, runs: Sequence[_Run], memory: float, offline: dict[str, list[str]],
         one_by_one: dict[str, list[str]]) -> dict:
    tentative, final = [], []
    for run in runs:
        t, f = _latencies(run)
        tentative += t
        final += f
    seconds = sum(len(r.stream.frames) / r.stream.fps for r in runs)
    return {"target": target, "streams": len(runs), "glosses": sum(len(r.stream.signs) for r in runs),
            "tentative_p50_s": _percentile(tentative, 50), "tentative_p95_s": _percentile(tentative, 95),
            "final_p50_s": _percentile(final, 50), "final_p95_s": _percentile(final, 95),
            "real_time_factor": sum(r.busy for r in runs) / seconds, "dropped": sum(r.dropped for r in runs),
            "memory_mib_per_stream": memory / len(runs),
            "wer": Counts.total(count(align(r.stream.glosses, r.answer.glosses)) for r in runs).wer,
            "wer_against_offline": Counts.total(count(align(offline[r.stream.name], r.answer.glosses))
                                                for r in runs).wer,
            "wer_clips_one_by_one": Counts.total(count(align(r.stream.glosses, one_by_one[r.stream.name]))
                                                 for r in runs).wer}


def _offline(local: LocalModel, plan: WindowPlan, streams: Sequence[_Stream], options) -> dict[str, list[str]]:
    """Each stream's frames recognised offline: framed for the model as a live stream's are, then buffered
    recognition with the same windows, the local model."""
    live = LiveModel.local(local, plan)
    answers = {}
    for stream in streams:
        frames, _ = frame_decoded(stream.frames, np.arange(len(stream.frames)) / stream.fps,
                                  len(stream.frames) / stream.fps, None, 0.0, local.target, name=stream.name)
        output = run_buffered(iter([frames]), plan, local.run, 1, live.min_frames)
        answers[stream.name] = live.decoder.recognise(output.log_probs, output.steps, output.frames, stream.fps,
                                                      options, in_segments=output.windows > 1).glosses
    return answers


def _clips_one_by_one(local: LocalModel, data: PreparedDataset, streams: Sequence[_Stream]) -> dict[str, list[str]]:
    """The clips whose sentences each stream signs, each recognised alone, their glosses joined."""
    recogniser = LocalRecogniser(local)
    paths = {record.id: data.video_path(record) for split in data.splits() for record in data.records(split)}
    answers: dict[str, list[str]] = {}
    cache: dict[str, list[str]] = {}
    for stream in streams:
        for clip in stream.clips:
            if clip not in cache:
                cache[clip] = recogniser.recognise(paths[clip], recogniser.options()).glosses
        answers[stream.name] = [gloss for clip in stream.clips for gloss in cache[clip]]
    return answers


def _work(model: LiveModel, stream: _Stream, options) -> dict:
    """A whole stream pushed a frame at a time as fast as it goes: the decoder's steps and the seconds of each
    update, in the first minute and the last. It runs in a thread of its own, as each stream sent in real time does
    (and the page's streams do): on the busy 2-core machine the main thread's model calls took 5-10x as long."""
    live = model.stream(options, name=stream.name)
    per_update = []  # (media seconds, steps decoded, seconds)

    def push() -> None:
        for index in range(len(stream.frames)):
            before, began = live.recogniser.decoder.steps_decoded, time.perf_counter()
            if live.feed(stream.frames[index:index + 1], [index / stream.fps]):
                per_update.append((index / stream.fps, live.recogniser.decoder.steps_decoded - before,
                                   time.perf_counter() - began))
        live.finish()

    with ThreadPoolExecutor(1) as pusher:
        pusher.submit(push).result()
    minutes = per_update[-1][0] / 60
    first = [u for u in per_update if u[0] < 60]
    last = [u for u in per_update if u[0] >= per_update[-1][0] - 60]
    summary = {"minutes": minutes, "updates": len(per_update), "glosses": len(live.recogniser.decoder.final)}
    for name, part in (("first_minute", first), ("last_minute", last)):
        summary[name] = {"steps_mean": statistics.mean(u[1] for u in part), "steps_max": max(u[1] for u in part),
                         "ms_mean": 1000 * statistics.mean(u[2] for u in part),
                         "ms_p95": 1000 * float(np.percentile([u[2] for u in part], 95))}
    return summary



def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _print_rows(title: str, rows: Sequence[dict], first: str) -> None:
    print_table(title, [first, "streams", "glosses", "tentative p50/p95 s", "final p50/p95 s", "RTF", "dropped",
                   "MiB/stream", "WER %", "vs offline %", "clips alone %"],
           [[str(r[first]), str(r["streams"]), str(r["glosses"]),
             f"{_seconds(r['tentative_p50_s'])} / {_seconds(r['tentative_p95_s'])}",
             f"{_seconds(r['final_p50_s'])} / {_seconds(r['final_p95_s'])}", f"{r['real_time_factor']:.2f}",
             str(r["dropped"]), f"{r['memory_mib_per_stream']:.1f}", f"{r['wer']:.2f}",
             f"{r['wer_against_offline']:.2f}", f"{r['wer_clips_one_by_one']:.2f}"] for r in rows], width=140)


def _plans(text: str, stride: int) -> list[WindowPlan]:
    try:
        return [WindowPlan(*map(int, item.split("/")), stride) for item in text.split(",") if item]
    except (TypeError, ValueError) as exc:
        raise click.BadParameter(f"{text!r}: expected WINDOW/CONTEXT,... in frames ({exc})",
                                 param_hint="--sweep") from None


def _targets(local: LocalModel, plan: WindowPlan, serve: bool, url: str | None, repository: Path | None, work: Path):
    """(name, live model) for each target: the local model, then the server's (started here unless --url)."""
    yield "local", LiveModel.local(local, plan)
    if not serve:
        return
    from qslr.deploy.serving.triton_repository import RepositorySettings, build_repository

    folder = repository or work / "repository"
    with served(url, lambda: repository or build_repository(local.source, folder, RepositorySettings(),
                                                            local.height, local.width)) as address:
        yield "server", LiveModel.served(address, False, folder, plan.window, plan.context)


@click.command("live")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None)
@click.option("--onnx", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Instead of --checkpoint: a graph of `qslr export onnx` (--int8 too), in onnxruntime, one thread "
                   "a call (with --no-serve).")
@click.option("--streams", "folder", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="The streams/ folder of `qslr data synth --streams` (of the checkpoint's corpus).")
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="The prepared dataset whose clips the streams' sentences come from (the clips one by one).")
@click.option("--concurrency", "concurrencies", type=int, multiple=True, default=(1, 4, 16), show_default=True)
@click.option("--seconds", type=float, default=60.0, show_default=True, help="Each stream, to its last sentence.")
@click.option("--window", type=int, default=None, help="Live windows [default: the live defaults].")
@click.option("--context", type=int, default=None)
@click.option("--sweep", default="32/8,48/8,48/12,64/8,64/16", show_default=True,
              help="WINDOW/CONTEXT settings measured at one stream, locally (empty: none).")
@click.option("--serve/--no-serve", default=True, show_default=True, help="Also through a server.")
@URL_OPTION
@click.option("--repository", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="The served repository (its vocabulary; started unless --url) [default: one built here].")
@click.option("--work-stream", type=int, default=0, show_default=True,
              help="The stream pushed whole for the decoding work per update (-1: none).")
@click.option("--json-out", type=click.Path(dir_okay=False, path_type=Path), default=Path("bench-results/live.json"),
              show_default=True)
def bench_live(checkpoint: Path | None, onnx: Path | None, folder: Path, data: Path, concurrencies: tuple[int, ...],
               seconds: float, window: int | None, context: int | None, sweep: str, serve: bool, url: str | None,
               repository: Path | None, work_stream: int, json_out: Path) -> None:
    """Live streams in real time, locally and through a server: latency per gloss, real-time factor, drops, memory,
    WER against the offline answer and the clips one by one."""
    if (checkpoint is None) == (onnx is None) or (onnx is not None and serve):
        raise click.UsageError("give --checkpoint, or --onnx with --no-serve (a repository is built from a checkpoint)")
    local = load_checkpoint_model(checkpoint) if checkpoint else load_onnx_model(onnx)
    plan = WindowPlan.for_live({}, local.windows.stride, window, context)
    paths = sorted(folder.glob("stream-*.webm"), key=lambda p: int(p.stem.split("-")[1]))
    if len(paths) < max(concurrencies):
        raise click.UsageError(f"{folder}: {len(paths)} streams, {max(concurrencies)} asked at once")
    streams = [_stream(path, seconds) for path in paths[:max(concurrencies)]]
    dataset = PreparedDataset(data)
    options = LiveModel.local(local, plan).decoder.options({})
    offline, one_by_one = _offline(local, plan, streams, options), _clips_one_by_one(local, dataset, streams)
    rows = []
    with tempfile.TemporaryDirectory(prefix="qslr-bench-live-") as work:
        for name, model in _targets(local, plan, serve, url, repository, Path(work)):
            for n in concurrencies:
                runs, memory = _at_once(model, streams[:n], options)
                rows.append(_row(name, runs, memory, offline, one_by_one))
                log.info("%s, %d streams: %s", name, n, rows[-1])
    _print_rows(f"Live streams of {seconds:g} s sent in real time, windows {plan.window}/{plan.context}", rows,
                "target")
    sweep_rows = []
    for setting in _plans(sweep, local.windows.stride):
        runs, memory = _at_once(LiveModel.local(local, setting), streams[:1], options)
        sweep_rows.append({"window": f"{setting.window}/{setting.context}",
                           **_row("local", runs, memory, _offline(local, setting, streams[:1], options), one_by_one)})
    if sweep_rows:
        _print_rows("Live windows at one stream, locally", sweep_rows, "window")
    work = _work(LiveModel.local(local, plan), _stream(paths[work_stream], None), options) if work_stream >= 0 else {}
    if work:
        print_table(f"Decoding work per update over a {work['minutes']:.1f}-minute stream ({work['updates']} updates)",
               ["part", "steps decoded mean", "max", "ms mean", "ms p95"],
               [[name.replace("_", " "), f"{w['steps_mean']:.1f}", str(w["steps_max"]), f"{w['ms_mean']:.1f}",
                 f"{w['ms_p95']:.1f}"] for name, w in ((k, work[k]) for k in ("first_minute", "last_minute"))],
               width=140)
    payload = {"title": "Live recognition", "checkpoint": str(checkpoint or onnx), "window": plan.window,
               "context": plan.context, "seconds": seconds, "results": rows, "sweep": sweep_rows,
               "decoding_work": work, "environment": environment()}
    write_text_atomic(json_out, json.dumps(payload, indent=1) + "\n")
    click.echo(f"wrote {json_out}")
