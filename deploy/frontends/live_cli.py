"""`qslr recognise --live SOURCE`: glosses printed as they become final while a camera or a pipe delivers frames.

Text: each gloss on a line of its own once it is final, with its time; on a terminal, the tentative glosses after
them on the last line, rewritten in place as they change. JSON (--json): one line per update (`final`: the glosses
that became final with it, `tentative`: those after them for now, each with its index and span; frames received,
frames final, windows run, frames dropped), then a last line that is the record `qslr recognise --json` prints for
a file.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

import click

from qslr.deploy.frontends.live import LiveModel
from qslr.deploy.frontends.live_source import LiveSource
from qslr.deploy.serving.recognition import Recognition
from qslr.deploy.serving.served_decoding import DecodeOptions
from qslr.deploy.serving.streaming import LiveGloss, LiveUpdate
from qslr.pipelines.framing_options import FramingOptions

_CLEAR_LINE = "\r\x1b[K"


def _line(gloss: LiveGloss) -> str:
    return _span_line(gloss.gloss, gloss.start_s, gloss.end_s)


def _span_line(gloss: str, start: float, end: float) -> str:
    return f"  {start:.2f}-{end:.2f} s  {gloss}"


# The last JSON line: the record `qslr recognise --json` prints for a file, of the source's name and its answer.
FinalRecord = Callable[[str, Recognition], dict]


class _Printer:
    def __init__(self, final_record: FinalRecord | None):
        self.final_record, self.json_lines = final_record, final_record is not None
        self.terminal = sys.stdout.isatty()
        self.printed = 0  # final glosses printed

    def update(self, update: LiveUpdate, dropped: int) -> None:
        if self.json_lines:
            click.echo(json.dumps({**update.to_dict(), "dropped": dropped}))
            return
        # A gloss already printed comes again only when a repeat merged into it moved its end.
        self._finals([_line(gloss) for gloss in update.final if gloss.index >= self.printed])
        if self.terminal:
            tentative = " ".join(g.gloss for g in update.tentative)
            click.echo(f"{_CLEAR_LINE}  ... {tentative}" if tentative else _CLEAR_LINE, nl=False)

    def _finals(self, lines: list[str]) -> None:
        if lines and self.terminal:
            click.echo(_CLEAR_LINE, nl=False)
        for line in lines:
            click.echo(line)
        self.printed += len(lines)

    def answer(self, name: str, result, dropped: int) -> None:
        if self.json_lines:
            click.echo(json.dumps(self.final_record(name, result)))
            return
        self._finals([_span_line(*span) for span in result.spans[self.printed:]])
        summary = f"{name}: {' '.join(result.glosses) or '(no glosses)'}  (score {result.score:.3f})"
        if dropped:
            summary += f"; {dropped} frames dropped (the recogniser fell behind the camera)"
        click.echo(summary)
        if result.framing:
            click.echo(f"  framing: {result.framing['summary']}")


def recognise_live(source: str, model: LiveModel, options: DecodeOptions, framing: FramingOptions,
                   final_record: FinalRecord | None = None) -> None:
    """Recognise a live SOURCE until it ends (Ctrl-C stops a camera: its answer so far is then printed); JSON lines
    where ``final_record`` makes the last one, text otherwise."""
    reader = LiveSource(source)
    stream = model.stream(options, framing, reader.name)
    printer = _Printer(final_record)
    try:
        for captured in reader.frames():
            for update in stream.feed(captured.frames, captured.starts, captured.matrix, captured.fps):
                printer.update(update, reader.dropped)
    except KeyboardInterrupt:
        if not reader.camera or not stream.started:
            raise
    printer.answer(reader.name, stream.finish(reader.end), reader.dropped)
