"""`qslr data`: build prepared datasets and describe them."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from qslr.pipelines.corpora import CORPORA
from qslr.pipelines.prepared import read_any_vocab
from qslr.pipelines.source_framing import CROP, FRAMINGS
from qslr.pipelines.summary import print_prepare_report, print_summary, summarise
from qslr.pipelines.synthetic.spec import SynthSpec

if TYPE_CHECKING:
    from qslr.pipelines.prepare import PrepareReport

log = logging.getLogger(__name__)
_DEFAULTS = SynthSpec()


@click.group("data")
def data() -> None:
    """Prepare datasets (synthetic, Phoenix-2014, Phoenix-2014-T, CSL-Daily, a folder of videos) and describe them."""


@data.command("synth")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Dataset directory to create.")
@click.option("--videos", type=int, default=_DEFAULTS.videos, show_default=True, help="Videos in all splits together.")
@click.option("--vocab", type=int, default=_DEFAULTS.vocab, show_default=True, help="Number of distinct glosses.")
@click.option("--signers", type=int, default=_DEFAULTS.signers, show_default=True, help="Number of signers.")
@click.option("--heldout-signers", type=int, default=_DEFAULTS.heldout_signers, show_default=True,
              help="Signers kept out of train; dev and test use only them.")
@click.option("--min-glosses", type=int, default=_DEFAULTS.min_glosses, show_default=True)
@click.option("--max-glosses", type=int, default=_DEFAULTS.max_glosses, show_default=True)
@click.option("--repeat-share", type=float, default=_DEFAULTS.repeat_share, show_default=True,
              help="Share of glosses (after a sentence's first) that repeat the one before: a sign made twice.")
@click.option("--dev-fraction", type=float, default=_DEFAULTS.dev_fraction, show_default=True)
@click.option("--test-fraction", type=float, default=_DEFAULTS.test_fraction, show_default=True)
@click.option("--size", type=int, default=_DEFAULTS.size, show_default=True, help="Frame height and width in pixels.")
@click.option("--fps", type=int, default=_DEFAULTS.fps, show_default=True)
@click.option("--seed", type=int, default=_DEFAULTS.seed, show_default=True, help="Same seed, same files, bit for bit.")
@click.option("--appearance-variation", type=float, default=_DEFAULTS.appearance_variation, show_default=True,
              help="0: all signers look alike; 1: realistic spread of skin tones, clothes, backgrounds.")
@click.option("--size-jitter", type=float, default=_DEFAULTS.size_jitter, show_default=True)
@click.option("--speed-jitter", type=float, default=_DEFAULTS.speed_jitter, show_default=True)
@click.option("--position-jitter", type=float, default=_DEFAULTS.position_jitter, show_default=True)
@click.option("--noise", type=float, default=_DEFAULTS.noise, show_default=True,
              help="Max camera noise std (0..1 scale).")
@click.option("--crf", type=int, default=_DEFAULTS.crf, show_default=True, help="VP9 constant quality.")
@click.option("--streams", type=int, default=_DEFAULTS.streams, show_default=True,
              help="Also render this many long streams of continuous signing (streams/stream-K.webm and its "
                   "reference .json): a held-out signer signing their test sentences in a row.")
@click.option("--stream-sentences", type=int, default=_DEFAULTS.stream_sentences, show_default=True,
              help="Sentences in each stream (a signer's test sentences in order, again from the first if need be).")
@click.option("--workers", type=int, default=None, help="Rendering processes [default: all cores].")
@click.option("--phoenix-raw", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also write the corpus in the raw RWTH-PHOENIX-Weather 2014 layout (PNG frames, corpus CSV) here.")
@click.option("--overwrite", is_flag=True, help="Replace existing output directories.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def synth(out: Path, workers: int | None, phoenix_raw: Path | None, overwrite: bool, as_json: bool, **knobs) -> None:
    """Render the synthetic sign-language corpus as a prepared dataset."""
    # Imported here: rendering pulls in PyAV and PyTorch, which `qslr data --help` does not need.
    from qslr.pipelines.synthetic.generator import generate_corpus

    generate_corpus(SynthSpec(**knobs), out, overwrite=overwrite, workers=workers, phoenix_raw_out=phoenix_raw)
    _show(out, as_json)


@data.command("concat")
@click.option("--data", "root", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A prepared dataset.")
@click.option("--split", default="test", show_default=True, type=click.Choice(["train", "dev", "test"]))
@click.option("--clips", type=int, default=10, show_default=True, help="How many clips to join.")
@click.option("--first", type=int, default=0, show_default=True, help="Position of the first clip in the split.")
@click.option("--codec", type=click.Choice(["vp9", "h264"]), default="vp9", show_default=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The joined video (.webm for VP9, .mp4 for H.264); its reference goes beside it as .json.")
def concat(root: Path, split: str, clips: int, first: int, codec: str, out: Path) -> None:
    """Join clips of a split into one long video, with the reference: their glosses in order and where each
    clip starts and ends."""
    # Imported here: encoding pulls in PyAV, which the other data commands do not all need.
    from qslr.pipelines.long_videos import CODECS, ConcatError, JoinedVideo, choose_clips, join_clips
    from qslr.pipelines.prepared import DatasetFormatError, PreparedDataset
    from qslr.pipelines.video_io import VideoDecodeError

    suffix = CODECS[codec][2]
    if out.suffix.lower() != suffix:
        raise click.BadParameter(f"{out}: a {codec} video is written as {suffix}", param_hint="--out")
    try:
        dataset = PreparedDataset(root)
        joined = join_clips(dataset, choose_clips(dataset, split, clips, first), out, codec)
    except (ConcatError, DatasetFormatError, VideoDecodeError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {out}: {len(joined.parts)} clips, {joined.frames} frames ({joined.frames / joined.fps:.1f} s "
               f"at {joined.fps:g} fps), {len(joined.glosses.split())} glosses; reference "
               f"{JoinedVideo.reference_path(out)}")


def _parse_size(value: str) -> tuple[int, int]:
    width, _, height = value.lower().partition("x")
    if not (width.isdigit() and height.isdigit() and int(width) > 0 and int(height) > 0
            and int(width) % 2 == 0 and int(height) % 2 == 0):
        raise click.BadParameter(f"{value!r}: expected WIDTHxHEIGHT with even positive numbers, e.g. 256x256")
    return int(width), int(height)


def _parse_aspect(value: str | None) -> float | None:
    if value is None:
        return None
    width, _, height = value.partition(":")
    try:
        aspect = float(width) / float(height)
    except (ValueError, ZeroDivisionError):
        aspect = 0.0
    if not aspect > 0:
        raise click.BadParameter(f"{value!r}: expected WIDTH:HEIGHT, e.g. 3:4 or 210:260", param_hint="--aspect")
    return aspect


@data.command("prepare")
@click.argument("corpus", type=click.Choice(sorted(CORPORA)))
@click.option("--root", required=True, type=click.Path(exists=True, path_type=Path),
              help="The raw release, or the folder it was unpacked into (e.g. the one holding "
                   "phoenix-2014-multisigner, PHOENIX-2014-T-release-v3 or CSL-Daily); for `folder`, the folder of "
                   "videos holding one annotation table (.csv or .tsv: file, glosses, signer, split), or the table.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--size", default="256x256", show_default=True, help="Frame size of the encoded videos (WxH).")
@click.option("--crf", type=int, default=18, show_default=True, help="VP9 constant quality.")
@click.option("--workers", type=int, default=os.cpu_count() or 1, show_default=True)
@click.option("--vocab", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Fix the gloss ids (a vocab.json or the original gloss_dict.npy); rows with other glosses are "
                   "refused.")
@click.option("--strict", is_flag=True, help="Stop at the first bad row instead of reporting and skipping it.")
@click.option("--max-refused", type=click.FloatRange(0.0, 1.0), default=0.05, show_default=True,
              help="Fail, leaving the dataset unmarked, when more than this share of the rows is refused.")
@click.option("--overwrite", is_flag=True, help="Replace OUT when it holds anything but this preparation.")
@click.option("--fps", type=click.FloatRange(min=1.0), default=None,
              help="`folder`: the frame rate the videos are placed on, by their timestamps [default: 25].")
@click.option("--aspect", default=None,
              help="`folder`: the aspect (W:H) of the picture a frame shows, cut from each video before it is "
                   "resized to --size [default: --size's].")
@click.option("--framing", type=click.Choice(FRAMINGS), default=CROP, show_default=True,
              help="`folder`: a video of another aspect is centre-cropped to it, or letterboxed into it.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def prepare(corpus: str, root: Path, out: Path, size: str, crf: int, workers: int, vocab: Path | None, strict: bool,
            max_refused: float, overwrite: bool, fps: float | None, aspect: str | None, framing: str,
            as_json: bool) -> None:
    """Turn a raw corpus release, or a folder of videos with an annotation table, into a prepared dataset; a rerun
    resumes where a crash stopped.

    A folder's videos are shown upright (their display matrix), placed on --fps by their timestamps and cropped
    (or letterboxed) to --aspect before they are resized. Fails (exit 1) when a split ends up empty or more than
    --max-refused of the rows are refused.
    """
    # Imported here: encoding pulls in PyAV and PyTorch, which the other data commands do not all need.
    from qslr.pipelines.prepare import PreparationFailed, PrepareSettings, prepare_corpus

    width, height = _parse_size(size)
    if not CORPORA[corpus].videos:
        given = [name for name, value in (("--fps", fps), ("--aspect", aspect), ("--framing", framing != CROP))
                 if value]
        if given:
            raise click.UsageError(f"{', '.join(given)}: only for `folder`; {corpus}'s frames are prepared as the "
                                   f"original code prepares them")
        if root.is_file():
            raise click.BadParameter(f"{root}: {corpus} needs the release's folder", param_hint="--root")
    settings = PrepareSettings(width, height, crf, max(1, workers), strict, overwrite, max_refused, fps,
                               _parse_aspect(aspect), framing)
    try:
        glosses = read_any_vocab(vocab) if vocab else None
        report = prepare_corpus(corpus, root, out, settings, glosses)
    except PreparationFailed as exc:
        _show_preparation(exc.report, out, as_json, list_refusals=False)
        raise click.ClickException(str(exc)) from None
    _show_preparation(report, out, as_json, list_refusals=True)


def _show_preparation(report: PrepareReport, out: Path, as_json: bool, list_refusals: bool) -> None:
    if as_json:
        click.echo(json.dumps(report.to_dict(), ensure_ascii=False, indent=1))
        return
    if list_refusals:
        for refusal in report.refused:
            click.echo(f"  refused {refusal.id} ({refusal.where}): {refusal.reason}")
    print_prepare_report(report, out)


@data.command("summary")
@click.argument("root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def summary(root: Path, as_json: bool) -> None:
    """Describe a prepared dataset: videos, frames, glosses, signers per split, disk size."""
    _show(root, as_json)


def _show(root: Path, as_json: bool) -> None:
    result = summarise(root)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=1))
    else:
        print_summary(result)
