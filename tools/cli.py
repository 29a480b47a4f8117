"""The `qslr` command: one group per stage, each defined in the package that owns the stage.

Failures end here too, in one place: an error about the user's input or machine (a missing file, a bad
checkpoint or dataset, a busy port) becomes one line on standard error and exit status 1; anything else is a
bug in QSLR and keeps its traceback, followed by a one-line summary. `qslr -v` shows the traceback of both.
"""

from __future__ import annotations

import errno
import logging
import traceback

import click

from qslr.tools.lazy_group import LazyCommand, LazyGroup

# Imported only when used, so that `qslr --help` answers at once.
COMMANDS = {
    "data": LazyCommand("qslr.pipelines.cli:data",
        "Prepare datasets (synthetic, Phoenix-2014, Phoenix-2014-T, CSL-Daily,..."),
    "train": LazyCommand("qslr.train.cli:train",
        "Train PRESET with dotted key=value OVERRIDES; --nproc > 1 launches..."),
    "eval": LazyCommand("qslr.train.cli:eval_",
        "Decode a split with a checkpoint and score it (WER per signer,..."),
    "features": LazyCommand("qslr.train.cli:features",
        "Write frame-wise features per video (<out>/<split>/<id>.npy and..."),
    "model": LazyCommand("qslr.model.cli:model",
        "Inspect QSLR checkpoints and convert the original VAC, CorrNet and..."),
    "export": LazyCommand("qslr.deploy.cli:export",
        "Export a checkpoint to ONNX, TensorRT or torch-tensorrt."),
    "triton": LazyCommand("qslr.deploy.cli:triton",
        "Build Triton model repositories."),
    "serve": LazyCommand("qslr.deploy.cli:serve",
        "Run tritonserver on REPOSITORY until Ctrl-C, forwarding its log."),
    "infer": LazyCommand("qslr.deploy.cli:infer",
        "Recognise VIDEOS through a server; prints the glosses of each with..."),
    "recognise": LazyCommand("qslr.deploy.frontends.recognise_cli:recognise",
        "Recognise VIDEOS locally (no server): the glosses of each, with their..."),
    "web": LazyCommand("qslr.deploy.frontends.web.cli:web",
        "Serve a page on HOST:PORT to recognise an uploaded, recorded or live..."),
    "bench": LazyCommand("qslr.tools.bench:bench",
        "Benchmarks: each prints a table, writes JSON, and reports ratios..."),
    "config": LazyCommand("qslr.train.cli:config",
        "List presets and show a resolved experiment config."),
}

# Every error type QSLR defines is raised with a message for the user that names the file, row or request.
def _ours(module: str | None) -> bool:
    return (module or "").partition(".")[0] == "qslr"


def is_user_error(exc: Exception) -> bool:
    """True for what the user can put right: QSLR's own errors, the operating system's (a missing or unreadable
    file, a busy port) and a third-party module that is not installed."""
    if isinstance(exc, ModuleNotFoundError):
        return not _ours(exc.name)
    return isinstance(exc, OSError) or any(_ours(cls.__module__) for cls in type(exc).__mro__)


def one_line(exc: Exception) -> str:
    """The error's message on one line; an operating-system error as 'path: what is wrong'."""
    if isinstance(exc, OSError) and exc.strerror:
        paths = [str(path) for path in (exc.filename, exc.filename2) if path is not None]
        text = f"{' -> '.join(paths)}: {exc.strerror}" if paths else exc.strerror
    else:
        text = str(exc)
    first, *rest = [line.strip() for line in text.splitlines() if line.strip()] or [type(exc).__name__]
    # A server's log tail, say: the traceback of `qslr -v` holds it whole.
    return first + (f" (and {len(rest)} more line(s): see them with qslr -v)" if rest else "")


class QslrGroup(LazyGroup):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort, EOFError):
            raise  # click reports these itself (usage errors with exit status 2)
        except Exception as exc:
            if ctx.params.get("verbose") or (isinstance(exc, OSError) and exc.errno == errno.EPIPE):
                raise
            if is_user_error(exc):
                raise click.ClickException(one_line(exc)) from None
            traceback.print_exc()
            raise click.ClickException(f"unexpected {type(exc).__name__} (a bug in QSLR; the traceback above "
                                       f"shows where): {one_line(exc)}") from None


@click.group(cls=QslrGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug) and tracebacks of errors.")
@click.version_option(package_name="qslr")
def cli(verbose: int) -> None:
    """QSLR: continuous sign language recognition (VAC / SMKD) from data to a served model."""
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main() -> None:
    cli(prog_name="qslr")


if __name__ == "__main__":
    main()
