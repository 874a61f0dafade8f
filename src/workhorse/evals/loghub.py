"""Loader for log-parsing benchmarks laid out like Loghub-2k.

The layout, which any system can follow (not only the eight of Loghub-2k)::

    root/
      log_formats.json                  {"HDFS": {"log_file": "HDFS/HDFS_2k.log",
                                                  "log_format": "<Date> <Time> ... <Content>"}, ...}
      HDFS/HDFS_2k.log                  raw log lines
      HDFS/HDFS_2k.log_structured_corrected.csv   LineId, header fields..., Content, EventId,
                                                  EventTemplate (or ..._structured.csv)

`LineId` numbers the raw lines from 1, so row ``LineId = k`` belongs to line ``k`` of the log file;
the loader checks that the two files agree in length and that the LineIds are exactly 1..n, since
a silent misalignment would make every score meaningless.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workhorse.errors import DatasetFormatError, DatasetNotFoundError

FORMATS_FILE = "log_formats.json"
# The corrected labels (Khan et al., ICSE 2022) fix known errors in the original ones; prefer them.
STRUCTURED_SUFFIXES = ("_structured_corrected.csv", "_structured.csv")
REQUIRED_COLUMNS = ("LineId", "Content", "EventTemplate")


@dataclass(frozen=True)
class LoghubSystem:
    """One system's raw lines with their ground truth; index i of every list is line i + 1."""

    name: str
    log_format: str  # header format from log_formats.json, e.g. "<Date> <Time> <Level> <Component>: <Content>"
    lines: list[str]  # raw log lines, newline stripped, in file order
    contents: list[str]  # the Content column: each line's message without its header
    truth_templates: list[str]  # the EventTemplate column

    def __len__(self) -> int:
        return len(self.lines)


def _formats(root: Path) -> dict[str, Any]:
    if not root.is_dir():
        raise DatasetNotFoundError(
            f"log-parsing dataset folder not found: {root}",
            hint="pass the folder that holds log_formats.json and one sub-folder per system "
            "(e.g. ../shared/datasets/loghub_2k)",
        )
    path = root / FORMATS_FILE
    if not path.is_file():
        raise DatasetNotFoundError(
            f"{FORMATS_FILE} missing from {root}",
            hint=f'add {path} mapping each system to {{"log_file": "<Sys>/<Sys>_2k.log", "log_format": "..."}}',
        )
    try:
        formats = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetFormatError(f"{path} is not valid JSON: {e}", hint="fix or restore the file") from e
    if not isinstance(formats, dict):
        raise DatasetFormatError(
            f"{path} must hold a JSON object mapping system names to their settings",
            hint='e.g. {"HDFS": {"log_file": "HDFS/HDFS_2k.log", "log_format": "<Date> ... <Content>"}}',
        )
    return formats


def _entry(root: Path, formats: dict[str, Any], name: str) -> tuple[str, Path]:
    """The system's (log_format, raw log path), checked for shape."""
    entry = formats[name]
    if (
        not isinstance(entry, dict)
        or not isinstance(entry.get("log_format"), str)
        or not isinstance(entry.get("log_file"), str)
    ):
        raise DatasetFormatError(
            f'{root / FORMATS_FILE}: entry "{name}" needs string fields "log_file" and "log_format"',
            hint=f'e.g. "{name}": {{"log_file": "{name}/{name}_2k.log", "log_format": "<Date> ... <Content>"}}',
        )
    return entry["log_format"], root / entry["log_file"]


def systems(root: Path) -> list[str]:
    """The systems named in ``root/log_formats.json`` whose folder exists under ``root``, sorted.

    A system's folder is the one its ``log_file`` lies in; listing only those that exist lets a
    partial copy of a benchmark (a few systems) be used without editing its log_formats.json.
    """
    root = Path(root)
    formats = _formats(root)
    return sorted(name for name in formats if _entry(root, formats, name)[1].parent.is_dir())


def _structured_csv(log_path: Path) -> Path:
    for suffix in STRUCTURED_SUFFIXES:
        candidate = log_path.with_name(log_path.name + suffix)
        if candidate.is_file():
            return candidate
    tried = ", ".join(log_path.name + s for s in STRUCTURED_SUFFIXES)
    raise DatasetNotFoundError(
        f"no ground-truth CSV beside {log_path} (tried {tried})",
        hint="put the structured CSV (LineId, ..., Content, EventTemplate) in the same folder as the log",
    )


def _read_rows(path: Path) -> list[dict[str, str]]:
    # The csv module, not a split on commas: Content and EventTemplate hold quoted commas and quotes.
    # utf-8-sig: a byte-order mark would otherwise become part of the first column's name.
    try:
        with path.open(encoding="utf-8-sig", errors="replace", newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise DatasetFormatError(
                    f"{path} lacks column(s) {', '.join(missing)} (has: {', '.join(reader.fieldnames or [])})",
                    hint="the structured CSV needs a header row with LineId, Content and EventTemplate",
                )
            return list(reader)
    except csv.Error as e:
        raise DatasetFormatError(f"{path}: malformed CSV: {e}", hint="fix or restore the file") from e


def _read_lines(path: Path) -> list[str]:
    # Split on "\n" only: str.splitlines would also break lines at \x0b, \x1c, \u2028 and the like,
    # which do occur inside log messages and would shift every later line against its LineId.
    with path.open(encoding="utf-8", errors="replace", newline="") as f:
        text = f.read()
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line; it does not start another
    return [line.removesuffix("\r") for line in lines]


def load_system(root: Path, name: str) -> LoghubSystem:
    """One system's raw lines, contents and true templates, aligned by LineId."""
    root = Path(root)
    formats = _formats(root)
    if name not in formats:
        raise DatasetNotFoundError(
            f'system "{name}" is not in {root / FORMATS_FILE} (it has: {", ".join(sorted(formats))})',
            hint=f"pick one of those, or add an entry for {name} with its log_file and log_format",
        )
    log_format, log_path = _entry(root, formats, name)
    if not log_path.is_file():
        raise DatasetNotFoundError(
            f"log file of {name} missing: {log_path}",
            hint=f'put the raw log there, or fix "log_file" of {name} in {root / FORMATS_FILE}',
        )
    csv_path = _structured_csv(log_path)
    lines = _read_lines(log_path)
    rows = _read_rows(csv_path)
    if len(rows) != len(lines):
        raise DatasetFormatError(
            f"{csv_path} has {len(rows)} rows but {log_path} has {len(lines)} lines",
            hint="the structured CSV needs exactly one row per raw log line; use matching copies of both",
        )

    by_id: dict[int, dict[str, str]] = {}
    for row_number, row in enumerate(rows, start=2):  # row 1 is the header
        try:
            line_id = int(row["LineId"])
        except (TypeError, ValueError):
            raise DatasetFormatError(
                f"{csv_path}, row {row_number}: LineId {row['LineId']!r} is not an integer",
                hint="LineId must number the raw log lines from 1",
            ) from None
        if not 1 <= line_id <= len(lines) or line_id in by_id:
            raise DatasetFormatError(
                f"{csv_path}, row {row_number}: LineId {line_id} is out of range or repeated "
                f"(the log has {len(lines)} lines)",
                hint="LineId must number the raw log lines 1..n, each once",
            )
        if row["Content"] is None or row["EventTemplate"] is None:  # csv gives None for a short row
            raise DatasetFormatError(
                f"{csv_path}, row {row_number}: too few fields (no Content or EventTemplate)",
                hint="quote fields that contain commas; every row needs as many fields as the header",
            )
        by_id[line_id] = row
    ordered = [by_id[i] for i in range(1, len(lines) + 1)]
    return LoghubSystem(
        name=name,
        log_format=log_format,
        lines=lines,
        contents=[row["Content"] for row in ordered],
        truth_templates=[row["EventTemplate"] for row in ordered],
    )
