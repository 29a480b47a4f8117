"""Raw corpus -> prepared dataset: validate every row, encode each frame folder (or video) to VP9, write annotations.

Parallel over videos, resumable (a video exists under its final name only once it is completely
written, so a rerun keeps finished videos and redoes the rest), and the dataset looks complete only at
the very end: vocab.json, the file that makes a folder a prepared dataset, is written last, and only when
every split has videos and no more than ``max_refused`` of the rows were refused.

A corpus of videos (a team's own folder) goes through the front ends' framing (pipelines/framing.py): shown
upright, placed on the asked frame rate, cropped (or letterboxed) to the asked aspect and resized; the corpus
releases keep their original preparation, their frames resized whole to the frame size.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import multiprocessing
import shutil
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from qslr.pipelines.atomic_output import OutputExistsError, write_text_atomic
from qslr.pipelines.corpora import CORPORA, SPLITS, RawRow, Refusal
from qslr.pipelines.folder_lock import folder_lock
from qslr.pipelines.framing import FramedReader, FrameTarget, FramingError, FramingOptions
from qslr.pipelines.gloss_normalisation import SENTENCE_NORMALISERS
from qslr.pipelines.prepared import (
    VOCAB_FILE,
    VideoRecord,
    build_vocab,
    video_relpath,
    write_records,
    write_source_framing,
    write_vocab,
)
from qslr.pipelines.progress import progress_bar
from qslr.pipelines.source_framing import CROP, FRAMINGS, SourceFraming
from qslr.pipelines.stm import StmEntry, write_stm
from qslr.pipelines.video_io import VideoDecodeError, Vp9Settings, read_frames, write_vp9

log = logging.getLogger(__name__)
MARKER = "prepare.json"
REPORT = "prepare-report.json"


# Causes of the refusals found here rather than by a corpus reader.
DUPLICATE_ID = "duplicate id"
EMPTY_ANNOTATION = "empty annotation"
UNKNOWN_GLOSS = "gloss not in the vocabulary"
MISSING_FRAMES = "missing frame folder"
EMPTY_FRAMES = "empty frame folder"
CORRUPT_FRAME = "corrupt frame"
UNREADABLE_VIDEO = "unreadable video"
UNFRAMEABLE_VIDEO = "video cannot be framed"


class PreparationStopped(RuntimeError):
    """--strict met a bad row."""


class PreparationFailed(RuntimeError):
    """Nothing, or too little, was prepared, so the folder is not marked complete.

    The message is one line, then the refusals grouped by cause and counted; ``report`` holds every refused row.
    """

    def __init__(self, message: str, report: PrepareReport):
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class PrepareSettings:
    width: int = 256
    height: int = 256
    crf: int = 18
    workers: int = 2
    strict: bool = False
    overwrite: bool = False
    max_refused: float = 0.05  # the largest share of rows that may be refused before the preparation fails
    # A corpus of videos only: the frame rate its frames are placed on (None: the corpus's), the aspect (width /
    # height) of the picture a frame shows (None: the frame size's), and how a video of another aspect is fitted.
    fps: float | None = None
    aspect: float | None = None
    framing: str = CROP

    def __post_init__(self):
        if not 0.0 <= self.max_refused <= 1.0:
            raise ValueError(f"max_refused must lie in [0, 1], got {self.max_refused}")
        if self.framing not in FRAMINGS:
            raise ValueError(f"framing must be one of {', '.join(FRAMINGS)}, got {self.framing!r}")
        if (self.fps is not None and not self.fps > 0) or (self.aspect is not None and not self.aspect > 0):
            raise ValueError(f"fps and aspect must be positive, got {self.fps} and {self.aspect}")

    def rate(self, corpus: str) -> float:
        return self.fps if self.fps and CORPORA[corpus].videos else CORPORA[corpus].fps

    def source_framing(self, corpus: str) -> SourceFraming:
        """How the corpus's frames are made from its sources: a release's resized whole, a folder's as asked."""
        if CORPORA[corpus].videos:
            return SourceFraming(self.aspect or self.width / self.height, self.framing)
        return SourceFraming.of_size(*CORPORA[corpus].source_size)

    def frame_target(self, corpus: str) -> FrameTarget | None:
        """What a corpus of videos is framed to (None for the releases' frame folders)."""
        if not CORPORA[corpus].videos:
            return None
        return FrameTarget(self.height, self.width, self.rate(corpus), self.source_framing(corpus))


@dataclass
class SplitReport:
    videos: int = 0
    frames: int = 0
    glosses: int = 0  # distinct glosses in the split's annotations
    signers: int = 0
    refused: dict[str, int] = field(default_factory=dict)  # cause -> rows


@dataclass
class PrepareReport:
    corpus: str
    # The corpus splits, and "?" for rows refused before their split was known.
    splits: dict[str, SplitReport] = field(default_factory=lambda: {split: SplitReport() for split in SPLITS})
    resumed: int = 0
    vocabulary: int = 0
    disk_bytes: int = 0
    complete: bool = False  # passed every check; vocab.json is written right after the report
    refused: list[Refusal] = field(default_factory=list)

    @property
    def videos(self) -> int:
        return sum(s.videos for s in self.splits.values())

    @property
    def frames(self) -> int:
        return sum(s.frames for s in self.splits.values())

    def to_dict(self) -> dict:
        fields = asdict(self)
        refused = fields.pop("refused")
        return {**fields, "videos": self.videos, "frames": self.frames,
                "refused_by_cause": {cause: count for cause, count, _ in refusal_groups(self.refused)},
                "refused": refused}


def refusal_groups(refusals: list[Refusal]) -> list[tuple[str, int, Refusal]]:
    """(cause, rows, the first such row) for each cause, the most frequent first."""
    counts = Counter(r.cause for r in refusals)
    first: dict[str, Refusal] = {}
    for refusal in refusals:
        first.setdefault(refusal.cause, refusal)
    return [(cause, count, first[cause]) for cause, count in counts.most_common()]


@dataclass(frozen=True)
class _Failed:
    cause: str
    reason: str


@dataclass(frozen=True)
class _Job:
    row: RawRow
    target: Path
    settings: PrepareSettings
    fps: float
    frame_target: FrameTarget | None  # a corpus of videos: the geometry and rate its videos are brought to


def _frame_files(row: RawRow) -> list[str] | _Failed:
    folder = row.frames.parent
    if not folder.is_dir():
        return _Failed(MISSING_FRAMES, f"missing frame folder {folder}")
    files = sorted(glob.glob(str(row.frames)))
    return files or _Failed(EMPTY_FRAMES, f"empty frame folder: nothing matches {row.frames}")


def _read_frame(path: str, size: tuple[int, int]):
    with Image.open(path) as image:
        image.load()
        return image.convert("RGB").resize(size, Image.LANCZOS)


def _encode(job: _Job) -> tuple[int, bool] | _Failed:
    """(frames, resumed) or why the row is refused."""
    row, target = job.row, job.target
    if target.is_file():
        with contextlib.suppress(VideoDecodeError):
            return len(read_frames(target)), True
        target.unlink()  # unreadable leftovers are redone
    if job.frame_target is not None:
        return _encode_video(job)
    files = _frame_files(row)
    if isinstance(files, _Failed):
        return files
    size = (job.settings.width, job.settings.height)

    def frames():
        for path in files:
            try:
                image = _read_frame(path, size)
            except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
                raise _CorruptFrame(f"corrupt frame {path}: {exc}") from None
            yield np.asarray(image)

    try:
        count = write_vp9(target, frames(), round(job.fps), Vp9Settings(crf=job.settings.crf))
    except _CorruptFrame as exc:
        return _Failed(CORRUPT_FRAME, str(exc))
    return count, False


class _CorruptFrame(ValueError):
    pass


def _encode_video(job: _Job) -> tuple[int, bool] | _Failed:
    """A video of a folder corpus, framed as a front end frames it, a chunk at a time."""
    reader = FramedReader(job.row.frames, job.frame_target, FramingOptions(job.settings.framing))
    try:
        count = write_vp9(job.target, (frame for chunk in reader.chunks() for frame in chunk), job.fps,
                          Vp9Settings(crf=job.settings.crf))
    except VideoDecodeError as exc:
        return _Failed(UNREADABLE_VIDEO, str(exc))
    except FramingError as exc:
        return _Failed(UNFRAMEABLE_VIDEO, str(exc))
    return count, False


def _check_output(out: Path, corpus: str, settings: PrepareSettings) -> None:
    identity = {"corpus": corpus, "width": settings.width, "height": settings.height, "crf": settings.crf}
    if CORPORA[corpus].videos:
        identity.update(fps=settings.rate(corpus), framing=settings.source_framing(corpus).to_dict())
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
    # Each row is reported by the command and in prepare-report.json; the log holds it for -v runs.
    log.info("refused %s (%s): %s", refusal.id, refusal.where, refusal.reason)
    report.refused.append(refusal)
    causes = report.splits.setdefault(refusal.split, SplitReport()).refused
    causes[refusal.cause] = causes.get(refusal.cause, 0) + 1
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
        failed = None
        if item.id in seen:
            failed = _Failed(DUPLICATE_ID, f"duplicate id (first at {seen[item.id]})")
        elif not item.annotation.split():
            failed = _Failed(EMPTY_ANNOTATION, "empty annotation")
        elif vocab is not None and (unknown := [g for g in item.annotation.split() if g not in vocab]):
            failed = _Failed(UNKNOWN_GLOSS, f"gloss(es) not in the vocabulary: {', '.join(unknown)}")
        if failed:
            _refuse(report, Refusal(item.split, item.id, item.where, failed.reason, failed.cause), strict)
        else:
            seen[item.id] = item.where
            rows.append(item)
    return rows


def prepare_corpus(corpus: str, root: str | Path, out: str | Path, settings: PrepareSettings = PrepareSettings(),
                   vocab: dict[str, int] | None = None, show_progress: bool = True) -> PrepareReport:
    """Prepare ``corpus`` from its raw release at ``root`` into ``out``; ``vocab`` fixes the gloss ids
    (for example the original's gloss_dict.npy), otherwise they are the sorted union of all splits.

    Raises PreparationFailed, leaving the folder unmarked, when a split ends up empty or more than
    ``settings.max_refused`` of the rows are refused.
    """
    if corpus not in CORPORA:
        raise ValueError(f"unknown corpus {corpus!r} (known: {', '.join(CORPORA)})")
    root, out = Path(root), Path(out)
    report = PrepareReport(corpus)
    rows = _accepted_rows(corpus, root, vocab, report, settings.strict)
    with folder_lock(out, "prepared dataset"):
        return _prepare_rows(corpus, rows, out, settings, vocab, report, show_progress)


def _prepare_rows(corpus: str, rows: list[RawRow], out: Path, settings: PrepareSettings,
                  vocab: dict[str, int] | None, report: PrepareReport, show_progress: bool) -> PrepareReport:
    _check_output(out, corpus, settings)
    # Encoding can only refuse more, so a verdict already lost on the annotations saves hours of encoding.
    _fail_unless_enough(report, rows, out, settings)
    for split in {row.split for row in rows}:
        (out / "videos" / split).mkdir(parents=True, exist_ok=True)
    jobs = [_Job(row, out / video_relpath(row.split, row.id), settings, settings.rate(corpus),
                 settings.frame_target(corpus)) for row in rows]
    results: dict[str, int] = {}
    # Workers from a fork server: resuming decodes videos with PyTorch ops, which can deadlock in a child
    # forked from a process that has already used OpenMP.
    pool = (ProcessPoolExecutor(settings.workers, mp_context=multiprocessing.get_context("forkserver"))
            if settings.workers > 1 else None)
    try:
        outcomes = pool.map(_encode, jobs, chunksize=2) if pool else map(_encode, jobs)
        with progress_bar("videos", enabled=show_progress) as progress:
            task = progress.add_task(f"encoding {corpus} videos", total=len(jobs))
            for job, outcome in zip(jobs, outcomes, strict=False):
                progress.advance(task)
                if isinstance(outcome, _Failed):
                    _refuse(report, Refusal(job.row.split, job.row.id, job.row.where, outcome.reason, outcome.cause),
                            settings.strict)
                    continue
                results[job.row.id], resumed = outcome
                report.resumed += resumed
    finally:
        if pool:
            pool.shutdown(wait=True, cancel_futures=True)
    prepared = [r for r in rows if r.id in results]
    _count_splits(report, prepared, results)
    _fail_unless_enough(report, prepared, out, settings)
    _write_annotations(corpus, out, prepared, results, settings, vocab, report)
    return report


def _count_splits(report: PrepareReport, rows: list[RawRow], frames: dict[str, int]) -> None:
    for split in SPLITS:
        split_rows = [r for r in rows if r.split == split]
        counts = report.splits[split]
        counts.videos = len(split_rows)
        counts.frames = sum(frames[r.id] for r in split_rows)
        counts.glosses = len({g for r in split_rows for g in r.annotation.split()})
        counts.signers = len({r.signer for r in split_rows})


def _fail_unless_enough(report: PrepareReport, rows: list[RawRow], out: Path, settings: PrepareSettings) -> None:
    """Raise PreparationFailed when a split has no rows or too large a share of all rows was refused."""
    refused, total = len(report.refused), len(rows) + len(report.refused)
    share = refused / total if total else 1.0
    empty = [split for split in SPLITS if not any(r.split == split for r in rows)]
    if share <= settings.max_refused and total and not empty:
        return
    verdict = f"{share:.1%}" + (f", more than --max-refused {settings.max_refused:.1%}"
                                 if share > settings.max_refused else "")
    nothing = f", nothing left for {', '.join(empty)}" if empty and total else ""
    report.disk_bytes = _disk_bytes(out)
    write_text_atomic(out / REPORT, json.dumps(report.to_dict(), ensure_ascii=False, indent=1) + "\n")
    summary = f"{refused} of {total} rows refused ({verdict}){nothing}" if total else "the annotations hold no rows"
    lines = [f"{report.corpus}: {summary}; not marked complete"]
    lines += [f"  {count:>7}  {cause} (first at {first.where}: {first.reason})"
              for cause, count, first in refusal_groups(report.refused)]
    lines.append(f"  every refused row, with file:line and reason: {out / REPORT}")
    raise PreparationFailed("\n".join(lines), report)


def _disk_bytes(out: Path) -> int:
    return sum(p.stat().st_size for p in out.rglob("*") if p.is_file())


def _write_annotations(corpus: str, out: Path, rows: list[RawRow], frames: dict[str, int],
                       settings: PrepareSettings, vocab: dict[str, int] | None, report: PrepareReport) -> None:
    normalise = SENTENCE_NORMALISERS[CORPORA[corpus].normalisation]
    fps = settings.rate(corpus)
    for split in SPLITS:
        split_rows = [r for r in rows if r.split == split]
        records = [VideoRecord(r.id, video_relpath(split, r.id), frames[r.id], r.signer,
                               " ".join(r.annotation.split()), fps, settings.height, settings.width)
                   for r in split_rows]
        write_records(out / f"{split}.jsonl", records)
        write_stm(out / f"{split}.stm", (StmEntry(r.id, r.signer, tuple(normalise(r.annotation).split()))
                                         for r in split_rows))
    vocabulary = vocab if vocab is not None else build_vocab(r.annotation.split() for r in rows)
    report.vocabulary = len(vocabulary)
    report.complete = True
    report.disk_bytes = _disk_bytes(out)
    write_text_atomic(out / REPORT, json.dumps(report.to_dict(), ensure_ascii=False, indent=1) + "\n")
    write_source_framing(out, settings.source_framing(corpus))
    write_vocab(out / VOCAB_FILE, vocabulary)  # last: from here on the folder is a prepared dataset
