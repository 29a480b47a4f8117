"""`qslr recognise`: recognise video files locally and print, or write, what each says.

Text by default (each gloss with its span in seconds, and what was done to bring the video to the model:
rotation, frame rate, crop), JSON Lines with --json, a NIST CTM file with --ctm, and with --ref a video's plain
word error rate against a reference and the alignment (jiwer's Levenshtein alignment, not the project's sclite
scorer: this is a quick look at one video).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import click

from qslr.deploy.served_limits import ServedLimits
from qslr.pipelines.framing_options import FramingOptions, Region
from qslr.pipelines.source_framing import FRAMINGS


@dataclass(frozen=True)
class ReferenceCheck:
    glosses: list[str]
    wer: float
    hits: int
    substitutions: int
    deletions: int
    insertions: int
    alignment: str


def check_reference(reference: list[str], hypothesis: list[str]) -> ReferenceCheck:
    import jiwer

    output = jiwer.process_words(" ".join(reference), " ".join(hypothesis))
    alignment = jiwer.visualize_alignment(output, show_measures=False, skip_correct=False)
    # jiwer heads the alignment with a sentence number: one video has one sentence.
    alignment = "\n".join(line for line in alignment.splitlines() if line.strip() and not line.startswith("==="))
    return ReferenceCheck(reference, output.wer, output.hits, output.substitutions, output.deletions,
                          output.insertions, alignment)


def read_reference(value: str) -> list[str]:
    """A --ref value: the glosses themselves, a file holding them, or the JSON reference of a joined video."""
    path = Path(value)
    text = path.read_text(encoding="utf-8") if path.is_file() else value
    if path.is_file() and path.suffix == ".json":  # the reference `qslr data concat` writes beside a long video
        try:
            text = json.loads(text)["glosses"]
        except (ValueError, KeyError, TypeError):
            raise click.BadParameter(f"{value}: not a reference written by `qslr data concat` (no glosses)",
                                     param_hint="--ref") from None
    glosses = text.split()
    if not glosses:
        raise click.BadParameter(f"{value!r} holds no glosses", param_hint="--ref")
    return glosses


def _seconds(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 4)


def as_json(video: Path, result, reference: ReferenceCheck | None) -> dict:
    record = {"video": str(video),
              "glosses": [{"gloss": gloss, "start": _seconds(start), "end": _seconds(end), "step": step}
                          for (gloss, start, end), step in zip(result.spans, result.steps, strict=True)],
              "score": result.score,
              "alternatives": [{"glosses": a.glosses, "score": a.score} for a in result.alternatives],
              "framing": result.framing}
    if reference is not None:
        record["reference"] = {key: getattr(reference, key) for key in ("glosses", "wer", "hits", "substitutions",
                                                                         "deletions", "insertions")}
    return record


def as_text(video: Path, result, reference: ReferenceCheck | None) -> str:
    def span(start: float, end: float) -> str:
        return "?-?" if math.isnan(start) else f"{start:.2f}-{end:.2f}"

    lines = [f"{video}: {' '.join(result.glosses) or '(no glosses)'}  (score {result.score:.3f})"]
    lines += [f"  {span(start, end)} s  {gloss}" for gloss, start, end in result.spans]
    if result.framing:
        lines.append(f"  framing: {result.framing['summary']}")
    if len(result.alternatives) > 1:
        lines.append("  alternatives:")
        lines += [f"    {a.score:9.3f}  {' '.join(a.glosses) or '(no glosses)'}" for a in result.alternatives]
    if reference is not None:
        lines.append(f"  WER {100 * reference.wer:.1f} % against {len(reference.glosses)} reference glosses "
                     f"({reference.substitutions} substituted, {reference.deletions} deleted, "
                     f"{reference.insertions} inserted)")
        lines += [f"    {line}" for line in reference.alignment.splitlines()]
    return "\n".join(lines)


def ctm_lines(utterance: str, result) -> list[str]:
    """NIST CTM, ``<id> 1 <start> <duration> <gloss>`` in seconds; a video without glosses has no line, as in
    the CTM files `qslr eval` writes. Without a frame rate the spans are unknown: the glosses then sit on
    their output steps as `qslr eval` places them."""
    if any(math.isnan(start) for start in result.start_s):
        from qslr.train.scoring.ctm import ctm_lines as step_lines

        return step_lines(utterance, result.glosses, result.steps)
    return [f"{utterance} 1 {start:.3f} {end - start:.3f} {gloss}" for gloss, start, end in result.spans]


_FRAMING_OPTIONS = [
    click.option("--framing", type=click.Choice(FRAMINGS), default=None,
                 help="A video of another aspect than the model's training pictures is centre-cropped to it (crop) "
                      "or fitted whole with black bars (letterbox) [default: as its training frames were made]."),
    click.option("--region", default=None, metavar="X,Y,W,H",
                 help="Where the signer is, in pixels of the upright picture: cropped first (widened to the training "
                      "aspect as far as the picture allows)."),
]


def with_framing_options(function):
    """--framing and --region, for every command that recognises a video file (recognise, infer)."""
    for option in reversed(_FRAMING_OPTIONS):
        function = option(function)
    return function


def chosen_framing(framing: str | None, region: str | None) -> FramingOptions:
    try:
        return FramingOptions(framing, Region.parse(region) if region else None)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--region") from None


@click.command("recognise")
@click.argument("videos", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A checkpoint from `qslr train`, run in PyTorch.")
@click.option("--onnx", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A graph from `qslr export onnx` (or a repository's visual/1/model.onnx), run in onnxruntime.")
@click.option("--beam-size", "--beam", "beam_size", type=int, default=None,
              help="Beam width (0: greedy) [default: the model's decode settings].")
@click.option("--top-k", type=int, default=None, help="Also list the K best distinct gloss sequences (beam only).")
@click.option("--height", type=int, default=None, help="Frame height [default: as the model states].")
@click.option("--width", type=int, default=None, help="Frame width [default: as the model states].")
@click.option("--json", "json_lines", is_flag=True, help="One JSON object a line, one line per video.")
@click.option("--ctm", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the glosses to this CTM file, each video's id its file name without extension.")
@click.option("--ref", "references", multiple=True,
              help="Reference glosses (or a file holding them) of each video, in order: WER and alignment.")
@click.option("--window", type=int, default=None,
              help="Frames per window for videos longer than one [default: the model's decode settings].")
@click.option("--context", type=int, default=None,
              help="Frames of context on each side of a window's kept middle [default: the model's].")
@click.option("--max-duration", type=float, default=ServedLimits.max_seconds, show_default=True,
              help="Longest video recognised, in seconds.")
@click.option("--live", is_flag=True,
              help="Recognise one live SOURCE as it comes: a camera (/dev/videoN), or a video stream on stdin (-) or "
                   "a pipe; each gloss is printed once final (--window and --context default to the live windows).")
@with_framing_options
def recognise(videos: tuple[Path, ...], checkpoint: Path | None, onnx: Path | None, beam_size: int | None,
              top_k: int | None, height: int | None, width: int | None, json_lines: bool, ctm: Path | None,
              references: tuple[str, ...], window: int | None, context: int | None, max_duration: float,
              live: bool, framing: str | None, region: str | None) -> None:
    """Recognise VIDEOS locally (no server): the glosses of each, with their time spans.

    Each video is shown upright (its display matrix), placed on the model's frame rate by its timestamps and
    cropped to the aspect of the model's training pictures before it is resized; spans are in the video's own
    seconds from its first frame."""
    if (checkpoint is None) == (onnx is None):
        raise click.UsageError("give a model: --checkpoint or --onnx (one of them)")
    if live and (len(videos) != 1 or references or ctm):
        raise click.UsageError("--live recognises one SOURCE (a camera, - for stdin, or a pipe), without --ref or "
                               "--ctm")
    if references and len(references) != len(videos):
        raise click.UsageError(f"--ref was given {len(references)} times for {len(videos)} videos: give one "
                               f"reference per video, in the same order")
    utterances = [video.stem for video in videos]
    if ctm is not None and len(set(utterances)) != len(utterances):
        raise click.UsageError("--ctm names each video by its file name without extension: these repeat")
    expected = [read_reference(value) for value in references] or [None] * len(videos)
    framing_options = chosen_framing(framing, region)

    from qslr.deploy.frontends.recognise import LocalRecogniser, ModelLoadError, load_checkpoint_model, load_onnx_model
    from qslr.deploy.serving.buffered import WindowPlan
    from qslr.pipelines.atomic_output import write_text_atomic

    try:
        model = load_checkpoint_model(checkpoint, height, width) if checkpoint else load_onnx_model(onnx, height,
                                                                                                    width)
        plan = WindowPlan.for_live({}, model.windows.stride, window, context) if live else WindowPlan(
            window or model.windows.window, model.windows.context if context is None else context, model.windows.stride)
        recogniser = LocalRecogniser(model, ServedLimits(max_seconds=max_duration), plan)
        options = recogniser.options(beam_size, top_k)
    except ModelLoadError as exc:
        raise click.ClickException(str(exc)) from None
    except ValueError as exc:
        raise click.UsageError(str(exc).replace("beam_size", "--beam").replace("top_k", "--top-k")) from None
    if live:
        from qslr.deploy.frontends.live import LiveModel
        from qslr.deploy.frontends.live_cli import recognise_live

        try:
            recognise_live(str(videos[0]), LiveModel.local(model, plan, recogniser.limits), options, framing_options,
                           (lambda name, result: as_json(Path(name), result, None)) if json_lines else None)
        except (ValueError, OSError) as exc:  # a source that cannot be read, or a frame that cannot be framed
            raise click.ClickException(" ".join(str(exc).split())) from None
        return

    failures, lines = 0, []
    for video, utterance, reference in zip(videos, utterances, expected, strict=True):
        try:
            result = recogniser.recognise(video, options, framing_options)
        except (ValueError, OSError) as exc:  # a refused video, or a file that cannot be read: this video alone
            failures += 1
            message = " ".join(str(exc).split())  # one line, whatever FFmpeg said
            click.echo(message if message.startswith(str(video)) else f"{video}: {message}", err=True)
            continue
        check = check_reference(reference, result.glosses) if reference else None
        click.echo(json.dumps(as_json(video, result, check)) if json_lines else as_text(video, result, check))
        lines += ctm_lines(utterance, result)
    if ctm is not None:
        write_text_atomic(ctm, "".join(line + "\n" for line in lines))
    if failures:
        click.echo(f"{failures} of {len(videos)} videos could not be recognised", err=True)
        raise SystemExit(1)
