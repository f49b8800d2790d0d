"""The CLI's output: one console for results, one for errors, and the rule that failures are one line."""

from __future__ import annotations

import functools

import typer
from rich.console import Console

from ogp.errors import OperatorError

console = Console()
err = Console(stderr=True)


def friendly(fn):
    """Turn expected operational failures into one red line and exit code 1, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except OperatorError as exc:
            err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper
