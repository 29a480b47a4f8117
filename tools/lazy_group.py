"""A click group whose commands are imported only when one of them runs.

Each command lives in the package that owns its stage and imports what it needs (PyTorch, DALI, onnx, ...)
at module level. Importing every one of them to print a help page took seconds, so the group knows each
command by its import path and one line of help, and imports it when it is run or asked for its own help.
A test keeps each line equal to the command's own.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import click

SHORT_HELP_LIMIT = 72


@dataclass(frozen=True)
class LazyCommand:
    target: str  # "package.module:attribute"
    short_help: str  # the command's own, as click shortens it to SHORT_HELP_LIMIT characters

    def load(self) -> click.Command:
        module, _, attribute = self.target.partition(":")
        return getattr(importlib.import_module(module), attribute)


class LazyGroup(click.Group):
    def __init__(self, *args, lazy: dict[str, LazyCommand], **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*self.lazy, *super().list_commands(ctx)]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            return self.lazy[name].load()
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, entry.short_help) for name, entry in self.lazy.items()]
        rows += [(name, self.commands[name].get_short_help_str(SHORT_HELP_LIMIT))
                 for name in super().list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)
