"""`workhorse logs parse`: log parsing. The call-log commands that lived here (`logs list|show|
export|stats`) are now `workhorse calls …`; the old names still work for one release, with a note."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import typer

from workhorse.cli import calls, logparse

app = typer.Typer(help="Log parsing: raw log lines to templates with typed parameters.", no_args_is_help=True)
app.command("parse")(logparse.parse)


def _deprecated(name: str, command: Callable[..., Any]) -> None:
    @functools.wraps(command)
    def moved(*args: Any, **kwargs: Any) -> Any:
        typer.secho(f"note: `workhorse logs {name}` is now `workhorse calls {name}`; the old name goes away in the next release",
                    fg=typer.colors.YELLOW, err=True)
        return command(*args, **kwargs)

    moved.__doc__ = f"Deprecated: use `workhorse calls {name}`."
    app.command(name, hidden=True)(moved)


for _name, _command in (("list", calls.list_calls), ("show", calls.show), ("export", calls.export), ("stats", calls.stats)):
    _deprecated(_name, _command)
