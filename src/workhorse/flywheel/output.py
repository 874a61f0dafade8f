"""A dataset folder: one `vN/` per build, each with its JSONL files and `manifest.json`.

A version appears whole or not at all: its files are written (and fsync'd) into a hidden staging
folder beside the versions, which is renamed to `vN` at the end. Two builds into one folder at
once cannot take the same N: the rename of the second fails on the first's folder, and it takes
the next number.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from workhorse.errors import DatasetFormatError, DatasetNotFoundError
from workhorse.tasks.store import fsync_dir, write_durably

MANIFEST = "manifest.json"
FORMAT = 1  # of the folder's layout and manifest, for readers to check


def versions(parent: Path) -> list[int]:
    """The complete versions in a dataset folder, oldest first."""
    if not parent.is_dir():
        return []
    return sorted(int(p.name[1:]) for p in parent.glob("v*") if p.name[1:].isdigit() and (p / MANIFEST).is_file())


def write_version(parent: Path, files: dict[str, Iterable[dict[str, Any]]], manifest: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """Write `files` (name → JSON rows) and the manifest (with `format`, `version` and each file's
    rows and sha256 added) as the next version of `parent`; returns its folder and manifest."""
    parent.mkdir(parents=True, exist_ok=True)
    staging = parent / f".staging-{secrets.token_hex(8)}"
    staging.mkdir()
    try:
        written = {name: _write_jsonl(staging / name, rows) for name, rows in files.items()}
        while True:
            version = _next_number(parent)
            final = {"format": FORMAT, **manifest, "version": version, "files": written}
            write_durably(staging / MANIFEST, (json.dumps(final, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
            target = parent / f"v{version}"
            try:
                os.rename(staging, target)
            except OSError as error:
                if error.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    continue  # another build took this number meanwhile
                raise
            fsync_dir(parent)
            return target, final
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already when the rename succeeded


def _next_number(parent: Path) -> int:
    """One past every `vN` there, complete or not: a folder left half-written by hand is never reused."""
    return max((int(p.name[1:]) for p in parent.glob("v*") if p.name[1:].isdigit()), default=0) + 1


def _write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    digest, count = hashlib.sha256(), 0
    with path.open("wb") as handle:
        for row in rows:
            line = (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
            digest.update(line)
            handle.write(line)
            count += 1
        handle.flush()
        os.fsync(handle.fileno())
    return {"rows": count, "sha256": digest.hexdigest()}


def resolve(directory: Path) -> Path:
    """A version folder as given, or a dataset folder's newest version."""
    if (directory / MANIFEST).is_file():
        return directory
    found = versions(directory)
    if not found:
        raise DatasetNotFoundError(f"no dataset at {directory} (no {MANIFEST} in it or in a v<N>/ folder under it)",
                                   "build one with `workhorse dataset build TASK -o DIR`")
    return directory / f"v{found[-1]}"


def read_manifest(version_dir: Path) -> dict[str, Any]:
    path = version_dir / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DatasetFormatError(f"cannot read {path}: {error}", "rebuild the dataset with `workhorse dataset build`") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DatasetFormatError(f"{path} is not a dataset manifest of format {FORMAT}",
                                 "rebuild the dataset with this version of workhorse")
    return manifest


def changed_files(version_dir: Path, manifest: dict[str, Any]) -> list[str]:
    """The files whose bytes no longer match the manifest's sha256 (or that are missing)."""
    changed = []
    for name, expected in manifest.get("files", {}).items():
        digest = hashlib.sha256()
        try:
            with (version_dir / name).open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        except OSError:
            changed.append(name)
            continue
        if digest.hexdigest() != expected.get("sha256"):
            changed.append(name)
    return changed
