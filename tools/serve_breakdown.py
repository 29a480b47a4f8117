"""Where a served request's time goes: Triton's own per-model statistics, and the same stages offline.

Triton counts, per model, the time requests waited in its queue and the time its backend spent on them
(input, inference, output). Taken before and after a load run, the difference gives each stage's share of
a request's time under that load. Next to it, the same three stages run one clip at a time in this process,
on the same videos and the same exported graph, so that serving overhead and batching show as the gap.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from qslr.deploy import model_names as models
from qslr.deploy import tensor_names as names
from qslr.deploy.export.onnx_export import onnx_session
from qslr.deploy.served_limits import ServedLimits
from qslr.deploy.served_video import clip_decoder
from qslr.deploy.serving.ragged_batch import pad_clips
from qslr.deploy.serving.served_decoding import DecoderSettings, ServedDecoder

STAGES = (models.PREPROCESS, models.VISUAL, models.CTC_DECODER)
ENSEMBLE = models.CSLR
_COMPUTE = ("compute_input", "compute_infer", "compute_output")


@dataclass(frozen=True)
class StageTime:
    requests: int  # requests the model answered during the run
    executions: int  # backend calls: fewer than requests when dynamic batching merged them
    queue_ms: float  # per request
    compute_ms: float  # per request: the backend's time for the call it was in, shared by its batch-mates

    @property
    def mean_batch(self) -> float:
        return self.requests / self.executions if self.executions else 0.0


def statistics_snapshot(client, models: Sequence[str] = (*STAGES, ENSEMBLE)) -> dict[str, dict]:
    """Triton's cumulative statistics for each model (tritonclient HTTP client)."""
    snapshot = {}
    for model in models:
        (entry,) = client.get_inference_statistics(model)["model_stats"]
        stats = entry["inference_stats"]
        snapshot[model] = {"requests": stats["success"]["count"], "executions": entry["execution_count"],
                           "success_ns": stats["success"]["ns"], "queue_ns": stats["queue"]["ns"],
                           "compute_ns": sum(stats[key]["ns"] for key in _COMPUTE)}
    return snapshot


def settled_snapshot(client, models: Sequence[str] = (*STAGES, ENSEMBLE), tries: int = 20) -> dict[str, dict]:
    """A snapshot taken once two in a row agree: Triton records a request's statistics after its response is
    sent, so a snapshot taken the moment the last answer arrives can miss it."""
    import time

    last = statistics_snapshot(client, models)
    for _ in range(tries):
        time.sleep(0.1)
        current = statistics_snapshot(client, models)
        if current == last:
            return current
        last = current
    return last


def stage_times(before: dict[str, dict], after: dict[str, dict]) -> dict[str, StageTime]:
    """Per model, what happened between two snapshots."""
    times = {}
    for model in after:
        delta = {key: after[model][key] - before[model][key] for key in after[model]}
        requests = max(delta["requests"], 1)
        queue_ns = delta["queue_ns"] if model != ENSEMBLE else 0
        compute_ns = delta["compute_ns"] if model != ENSEMBLE else delta["success_ns"]
        times[model] = StageTime(delta["requests"], delta["executions"], queue_ns / requests / 1e6,
                                 compute_ns / requests / 1e6)
    return times


def shares(times: dict[str, StageTime]) -> dict[str, float]:
    """Each stage's queue and compute time as a share of the ensemble's request time."""
    total = times[ENSEMBLE].compute_ms
    result = {}
    for stage in STAGES:
        result[f"{stage} queue"] = times[stage].queue_ms / total if total else 0.0
        result[f"{stage} compute"] = times[stage].compute_ms / total if total else 0.0
    result["ensemble overhead"] = 1.0 - sum(result.values())
    return result


def _interleaved_ms(contenders: dict[str, Callable[[], int]], repeats: int) -> dict[str, float]:
    """Median milliseconds per item of each contender (a pass returns how many items it did), passes
    alternating between contenders so that a machine's drift weighs on all of them alike."""
    for work in contenders.values():
        work()
    runs: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, work in contenders.items():
            start = time.perf_counter()
            items = work()
            runs[name].append((time.perf_counter() - start) / items)
    return {name: 1000 * statistics.median(values) for name, values in runs.items()}


def offline_decoding(videos: Sequence[bytes], decoders: Sequence[str], height: int, width: int,
                     limits: ServedLimits, batch: int = 8, repeats: int = 5) -> dict[str, float]:
    """Milliseconds per clip of each video decoder, one clip per call and ``batch`` clips per call (how
    `preprocess` gets them under load)."""
    contenders = {}
    for name in decoders:
        decoder = clip_decoder(name, height, width, limits)

        def one_at_a_time(decoder=decoder) -> int:
            for video in videos:
                decoder.decode([video])
            return len(videos)

        def batched(decoder=decoder) -> int:
            for start in range(0, len(videos), batch):
                decoder.decode(videos[start:start + batch])
            return len(videos)

        contenders[f"{name}, one at a time"] = one_at_a_time
        contenders[f"{name}, batches of {batch}"] = batched
    return _interleaved_ms(contenders, repeats)


def _median_ms(work: Callable[[object], object], items: Sequence, repeats: int) -> float:
    """Median over ``repeats`` passes of the mean time per item, after one pass of warm-up."""
    for item in items:
        work(item)
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for item in items:
            work(item)
        runs.append((time.perf_counter() - start) / len(items))
    return 1000 * statistics.median(runs)


def offline_stages(repository: Path, videos: Sequence[bytes], decoder: str, repeats: int = 3) -> dict[str, float]:
    """Milliseconds per clip of each stage run alone, one clip at a time, with the repository's own graph,
    vocabulary and settings."""
    settings = json.loads((repository / "qslr-repository.json").read_text())["settings"]
    height, width = int(settings["height"]), int(settings["width"])
    limits = ServedLimits(**settings["limits"])
    video_decoder = clip_decoder(decoder, height, width, limits)
    clips = [video_decoder.decode([v])[0].frames for v in videos]
    session = onnx_session(repository / models.VISUAL / "1" / "model.onnx", threads=int(settings["visual_threads"]))

    def visual(clip: np.ndarray):
        batch, lengths = pad_clips([clip], limits.min_frames)
        return session.run([names.LOG_PROBS, names.OUTPUT_LENGTHS], {names.FRAMES: batch, names.LENGTHS: lengths})

    outputs = [(visual(clip), len(clip)) for clip in clips]
    # The served decoder itself, with the repository's parameters and a request's default options.
    vocab = json.loads((repository / models.CTC_DECODER / "1" / "vocab.json").read_text())
    search = ServedDecoder(vocab, DecoderSettings.from_parameters(
        {f.name: str(settings[f.name]) for f in fields(DecoderSettings) if f.name in settings}))
    options = search.options({})

    def decode(output) -> None:
        (log_probs, steps), frames = output
        search.recognise(log_probs[0], int(steps[0]), frames, None, options)

    return {models.PREPROCESS: _median_ms(lambda v: video_decoder.decode([v]), videos, repeats),
            models.VISUAL: _median_ms(visual, clips, repeats),
            models.CTC_DECODER: _median_ms(decode, outputs, repeats)}
