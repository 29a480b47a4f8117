"""Raw corpus -> prepared dataset: validate every row, encode each frame folder to VP9, write annotations.

Parallel over videos, resumable (a video exists under its final name only once it is completely
written, so a rerun keeps finished videos and redoes the rest), and the dataset looks complete only at
the very end: vocab.json, the file that makes a folder a prepared dataset, is written last.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from rich.progress import Progress

from pipelines.atomic_output import OutputExistsError, write_text_atomic
from pipelines.corpora import CORPORA, RawRow, Refusal
from pipelines.gloss_normalisation import SENTENCE_NORMALISERS
from pipelines.prepared import VOCAB_FILE, VideoRecord, build_vocab, video_relpath, write_records, write_vocab
from pipelines.stm import StmEntry, write_stm
from pipelines.video_io import VideoDecodeError, Vp9Settings, read_frames, write_vp9

log = logging.getLogger(__name__)
MARKER = "prepare.json"
REPORT = "prepare-report.json"


class PreparationStopped(RuntimeError):
    """--strict met a bad row."""


@dataclass(frozen=True)
class PrepareSettings:
    width: int = 256
    height: int = 256
    crf: int = 18
    workers: int = 2
    strict: bool = False
    overwrite: bool = False


@dataclass
class PrepareReport:
    corpus: str
    videos: dict[str, int] = field(default_factory=dict)
    frames: int = 0
    resumed: int = 0
    vocabulary: int = 0
    disk_bytes: int = 0
    refused: list[Refusal] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {**asdict(self), "refused": [asdict(r) for r in self.refused]}


@dataclass(frozen=True)
class _Job:
    row: RawRow
    target: Path
    settings: PrepareSettings
    fps: float


def _frame_files(row: RawRow) -> list[str] | str:
    folder = row.frames.parent
    if not folder.is_dir():
        return f"missing frame folder {folder}"
    files = sorted(glob.glob(str(row.frames)))
    return files or f"empty frame folder: nothing matches {row.frames}"


def _read_frame(path: str, size: tuple[int, int]):
    with Image.open(path) as image:
        image.load()
        return image.convert("RGB").resize(size, Image.LANCZOS)


def _encode(job: _Job) -> tuple[int, bool] | str:
    """(frames, resumed) or the reason the row is refused."""
    row, target = job.row, job.target
    if target.is_file():
        with contextlib.suppress(VideoDecodeError):
            return len(read_frames(target)), True
        target.unlink()  # unreadable leftovers are redone
    files = _frame_files(row)
    if isinstance(files, str):
        return files
    size = (job.settings.width, job.settings.height)

    def frames():
        for path in files:
            try:
                image = _read_frame(path, size)
            except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
                raise _CorruptFrame(f"corrupt frame {path}: {exc}") from None
            yield np.asarray(image)

    partial = target.with_name(f".{target.name}.partial")
    try:
        count = write_vp9(partial, frames(), round(job.fps), Vp9Settings(crf=job.settings.crf))
    except _CorruptFrame as exc:
        partial.unlink(missing_ok=True)
        return str(exc)
    os.replace(partial, target)
    return count, False


class _CorruptFrame(ValueError):
    pass


def _check_output(out: Path, corpus: str, settings: PrepareSettings) -> None:
    identity = {"corpus": corpus, "width": settings.width, "height": settings.height, "crf": settings.crf}
    marker = out / MARKER
    if out.exists() and any(out.iterdir()):
        same = marker.is_file() and json.loads(marker.read_text()) == identity
        if settings.overwrite:
            shutil.rmtree(out)
        elif not same:
            raise OutputExistsError(f"{out}: holds something other than an unfinished {corpus} preparation with "
                                    f"these settings (pass --overwrite to replace it)")
    out.mkdir(parents=True, exist_ok=True)
    # Until the end, the folder must not look like a finished dataset.
    (out / VOCAB_FILE).unlink(missing_ok=True)
    write_text_atomic(marker, json.dumps(identity) + "\n")


def _refuse(report: PrepareReport, refusal: Refusal, strict: bool) -> None:
    log.warning("refused %s (%s): %s", refusal.id, refusal.where, refusal.reason)
    report.refused.append(refusal)
    if strict:
        raise PreparationStopped(f"{refusal.where}: video {refusal.id}: {refusal.reason} (--strict)")


def _accepted_rows(corpus: str, root: Path, vocab: dict[str, int] | None, report: PrepareReport,
                   strict: bool) -> list[RawRow]:
    rows: list[RawRow] = []
    seen: dict[str, str] = {}
    for item in CORPORA[corpus].read(root):
        if isinstance(item, Refusal):
            _refuse(report, item, strict)
            continue
        reason = None
        if item.id in seen:
            reason = f"duplicate id (first at {seen[item.id]})"
        elif not item.annotation.split():
            reason = "empty annotation"
        elif vocab is not None and (unknown := [g for g in item.annotation.split() if g not in vocab]):
            reason = f"gloss(es) not in the vocabulary: {', '.join(unknown)}"
        if reason:
            _refuse(report, Refusal(item.split, item.id, item.where, reason), strict)
        else:
            seen[item.id] = item.where
            rows.append(item)
    return rows


def prepare_corpus(corpus: str, root: str | Path, out: str | Path, settings: PrepareSettings = PrepareSettings(),
                   vocab: dict[str, int] | None = None, show_progress: bool = True) -> PrepareReport:
    """Prepare ``corpus`` from its raw release at ``root`` into ``out``; ``vocab`` fixes the gloss ids
    (for example the original's gloss_dict.npy), otherwise they are the sorted union of all splits."""
    if corpus not in CORPORA:
        raise ValueError(f"unknown corpus {corpus!r} (known: {', '.join(CORPORA)})")
    root, out = Path(root), Path(out)
    report = PrepareReport(corpus)
    rows = _accepted_rows(corpus, root, vocab, report, settings.strict)
    _check_output(out, corpus, settings)
    for split in {row.split for row in rows}:
        (out / "videos" / split).mkdir(parents=True, exist_ok=True)
    jobs = [_Job(row, out / video_relpath(row.split, row.id), settings, CORPORA[corpus].fps) for row in rows]
    results: dict[str, int] = {}
    # Workers from a fork server: resuming decodes videos with PyTorch ops, which can deadlock in a child
    # forked from a process that has already used OpenMP.
    pool = (ProcessPoolExecutor(settings.workers, mp_context=multiprocessing.get_context("forkserver"))
            if settings.workers > 1 else None)
    try:
        outcomes = pool.map(_encode, jobs, chunksize=2) if pool else map(_encode, jobs)
        with Progress(disable=not show_progress, transient=True) as progress:
            task = progress.add_task(f"encoding {corpus} videos", total=len(jobs))
            for job, outcome in zip(jobs, outcomes, strict=False):
                progress.advance(task)
                if isinstance(outcome, str):
                    _refuse(report, Refusal(job.row.split, job.row.id, job.row.where, outcome), settings.strict)
                    continue
                results[job.row.id], resumed = outcome
                report.resumed += resumed
    finally:
        if pool:
            pool.shutdown(wait=True, cancel_futures=True)
    _write_annotations(corpus, out, [r for r in rows if r.id in results], results, settings, vocab, report)
    return report


def _write_annotations(corpus: str, out: Path, rows: list[RawRow], frames: dict[str, int],
                       settings: PrepareSettings, vocab: dict[str, int] | None, report: PrepareReport) -> None:
    normalise = SENTENCE_NORMALISERS[CORPORA[corpus].normalisation]
    fps = CORPORA[corpus].fps
    for split in ("train", "dev", "test"):
        split_rows = [r for r in rows if r.split == split]
        records = [VideoRecord(r.id, video_relpath(split, r.id), frames[r.id], r.signer,
                               " ".join(r.annotation.split()), fps, settings.height, settings.width)
                   for r in split_rows]
        write_records(out / f"{split}.jsonl", records)
        write_stm(out / f"{split}.stm", (StmEntry(r.id, r.signer, tuple(normalise(r.annotation).split()))
                                         for r in split_rows))
        report.videos[split] = len(records)
    report.frames = sum(frames.values())
    vocabulary = vocab if vocab is not None else build_vocab(r.annotation.split() for r in rows)
    report.vocabulary = len(vocabulary)
    report.disk_bytes = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    write_text_atomic(out / REPORT, json.dumps(report.to_dict(), indent=1) + "\n")
    write_vocab(out / VOCAB_FILE, vocabulary)  # last: from here on the folder is a prepared dataset
