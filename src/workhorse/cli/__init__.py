"""The `workhorse` command line. One module per command group; heavy imports stay inside commands
so that `workhorse --help` is instant."""

from __future__ import annotations

import sys

import typer

from workhorse.errors import WorkhorseError

app = typer.Typer(
    name="workhorse",
    help="Small language models doing industrial line work on CPU.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help: typer's rich help shows a type after every flag (`--version <bool>`).
    rich_markup_mode=None,
)


def _print_version(value: bool) -> None:
    if value:
        from workhorse import __version__

        typer.echo(f"workhorse {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True, help="Print the version."),
) -> None:
    """Small language models doing industrial line work on CPU."""


def _register_groups() -> None:
    from workhorse.cli import bench, calls, dataset, eval, fit, logs, models, run, serve, tasks, train

    app.add_typer(models.app, name="models")
    app.add_typer(tasks.app, name="tasks")
    app.add_typer(bench.app, name="bench")
    app.add_typer(logs.app, name="logs")
    app.add_typer(calls.app, name="calls")
    app.add_typer(dataset.app, name="dataset")
    app.command("run")(run.run)
    app.command("fit")(fit.fit)
    app.command("eval")(eval.eval_command)
    app.command("train")(train.train)
    serve.register(app)


_register_groups()


def main() -> None:
    """Entry point: typer handles usage errors; a WorkhorseError becomes its message, its hint and exit 2."""
    try:
        app()
    except WorkhorseError as error:
        typer.secho(f"error: {error.message}", fg=typer.colors.RED, err=True)
        if error.hint:
            typer.echo(f"  hint: {error.hint}", err=True)
        sys.exit(2)
