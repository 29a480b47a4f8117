"""Write the synthetic corpus as a prepared dataset (and, optionally, in the raw Phoenix layout)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from qslr.pipelines.atomic_output import atomic_directory, write_text_atomic
from qslr.pipelines.prepared import (
    VideoRecord,
    build_vocab,
    video_relpath,
    write_records,
    write_source_framing,
    write_vocab,
)
from qslr.pipelines.progress import progress_bar
from qslr.pipelines.sign_spans import write_sign_spans
from qslr.pipelines.source_framing import SourceFraming
from qslr.pipelines.stm import StmEntry, write_stm
from qslr.pipelines.synthetic import phoenix_raw
from qslr.pipelines.synthetic.choreography import Choreography, choreograph
from qslr.pipelines.synthetic.corpus import CorpusPlan, Utterance, plan_corpus, video_rng
from qslr.pipelines.synthetic.render import render_frames
from qslr.pipelines.synthetic.spec import SynthSpec
from qslr.pipelines.synthetic.streams import FOLDER as STREAMS_FOLDER
from qslr.pipelines.synthetic.streams import render_stream, stream_jobs
from qslr.pipelines.synthetic.vocabulary import max_vocabulary_size
from qslr.pipelines.video_io import Vp9Settings, write_vp9

log = logging.getLogger(__name__)

MANIFEST = "synthetic.json"


@dataclass(frozen=True)
class _Job:
    spec: SynthSpec
    utterance: Utterance
    dataset_root: Path
    raw_root: Path | None


def _choreography(spec: SynthSpec, utterance: Utterance) -> Choreography:
    return choreograph(list(utterance.signs), utterance.signer.speed, video_rng(spec, utterance, 0))


def _frames(spec: SynthSpec, utterance: Utterance, height: int, width: int):
    placement = tuple(video_rng(spec, utterance, 1).uniform(-1.0, 1.0, 2) * spec.position_jitter)
    return render_frames(utterance.signer, _choreography(spec, utterance), height, width, placement,
                         video_rng(spec, utterance, 2))


def _render(job: _Job) -> int:
    spec, utterance = job.spec, job.utterance
    path = job.dataset_root / video_relpath(utterance.split, utterance.id)
    frames = _frames(spec, utterance, spec.size, spec.size)
    count = write_vp9(path, frames, spec.fps, Vp9Settings(crf=spec.crf))
    if job.raw_root is not None:
        folder = phoenix_raw.frame_dir(job.raw_root, utterance.split, utterance.id)
        folder.mkdir(parents=True)
        raw = _frames(spec, utterance, phoenix_raw.FRAME_HEIGHT, phoenix_raw.FRAME_WIDTH)
        for index, frame in enumerate(raw):
            Image.fromarray(frame).save(folder / phoenix_raw.frame_name(utterance.id, index), compress_level=1)
    return count


def _manifest(plan: CorpusPlan) -> str:
    return json.dumps({
        "generator": "qslr synthetic corpus",
        "spec": asdict(plan.spec),
        "signs": [asdict(sign) for sign in plan.vocabulary],
        "signers": [{**asdict(s), "heldout": s.name in plan.heldout} for s in plan.signers],
    }, indent=1) + "\n"


def generate_corpus(
    spec: SynthSpec,
    out: str | os.PathLike,
    overwrite: bool = False,
    workers: int | None = None,
    phoenix_raw_out: str | os.PathLike | None = None,
    show_progress: bool = True,
) -> Path:
    """Render every utterance of ``spec`` to ``out``; nothing appears at ``out`` unless all succeed."""
    spec.validate(max_vocabulary_size())
    plan = plan_corpus(spec)
    workers = max(1, workers or os.cpu_count() or 1)
    log.info("rendering %d videos with %d worker(s) into %s", len(plan.utterances), workers, out)
    with contextlib.ExitStack() as stack:
        root = stack.enter_context(atomic_directory(out, overwrite))
        raw_root = stack.enter_context(atomic_directory(phoenix_raw_out, overwrite)) if phoenix_raw_out else None
        for split in spec.split_sizes():
            (root / "videos" / split).mkdir(parents=True)
        jobs = [_Job(spec, u, root, raw_root) for u in plan.utterances]
        counts = _run(_render, jobs, workers, show_progress)
        frames_of = {u.id: n for u, n in zip(plan.utterances, counts, strict=True)}
        _write_annotations(plan, root, frames_of, raw_root)
        if spec.streams:
            (root / STREAMS_FOLDER).mkdir()
            _run(render_stream, stream_jobs(plan, root), workers, show_progress, "streams", chunks=1)
    return Path(out)


def _run(render, jobs: list, workers: int, show_progress: bool, what: str = "videos", chunks: int = 4) -> list:
    """``render`` every job, in order; on an error or Ctrl-C, drop the queued jobs instead of finishing them."""
    pool = ProcessPoolExecutor(workers) if workers > 1 and len(jobs) > 1 else None
    done: list = []
    try:
        results = pool.map(render, jobs, chunksize=chunks) if pool else map(render, jobs)
        with progress_bar(what, enabled=show_progress) as progress:
            task = progress.add_task(f"rendering {what}", total=len(jobs))
            for result in results:
                done.append(result)
                progress.advance(task)
    finally:
        if pool:
            pool.shutdown(wait=True, cancel_futures=True)
    return done


def _write_annotations(plan: CorpusPlan, root: Path, frames_of: dict[str, int], raw_root: Path | None) -> None:
    spec = plan.spec
    # Rendered at the frame size: the frames are the source pictures themselves.
    write_source_framing(root, SourceFraming.of_size(spec.size, spec.size))
    write_vocab(root / "vocab.json", build_vocab(u.glosses.split() for u in plan.utterances))
    for split in spec.split_sizes():
        utterances = plan.split(split)
        records = [
            VideoRecord(u.id, video_relpath(split, u.id), frames_of[u.id], u.signer.name, u.glosses,
                        float(spec.fps), spec.size, spec.size)
            for u in utterances
        ]
        write_records(root / f"{split}.jsonl", records)
        # The gloss names are fixed points of the Phoenix normalisation, so the raw annotation is
        # already the normalised reference.
        write_stm(root / f"{split}.stm", (StmEntry(u.id, u.signer.name, tuple(u.glosses.split())) for u in utterances))
        # Where each gloss is signed (for latency per gloss): the choreography again, without rendering.
        write_sign_spans(root, split, ((u.id, _choreography(spec, u).sign_spans(list(u.signs))) for u in utterances))
        if raw_root is not None:
            phoenix_raw.write_corpus_csv(raw_root, split, ((u.id, u.signer.name, u.glosses) for u in utterances))
    write_text_atomic(root / MANIFEST, _manifest(plan))


def rendered_frames(spec: SynthSpec, utterance: Utterance) -> np.ndarray:
    """The frames of one utterance before encoding (for inspection and tests)."""
    return np.stack(list(_frames(spec, utterance, spec.size, spec.size)))
