"""Reading work items from JSONL, CSV or plain-text streams, one at a time (bounded memory).

Each item has an id (its `id` field, else its line number) and a text. A malformed row becomes
a `BadRow` naming its line, so a run can report it and carry on.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TextIO


@dataclass(frozen=True)
class Item:
    line: int
    id: str
    text: str


@dataclass(frozen=True)
class BadRow:
    line: int
    problem: str


def read_items(stream: TextIO, *, fmt: str, field: str = "text") -> Iterator[Item | BadRow]:
    """fmt: "jsonl", "csv" or "text" (one item per line)."""
    if fmt == "csv":
        yield from _csv_items(stream, field)
        return
    for line_no, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        if fmt == "text":
            yield Item(line_no, str(line_no), line.rstrip("\n"))
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            yield BadRow(line_no, f"not valid JSON ({error.msg} at column {error.colno})")
            continue
        if isinstance(row, str):
            yield Item(line_no, str(line_no), row)
        elif not isinstance(row, dict) or not isinstance(row.get(field), str):
            yield BadRow(line_no, f"expected an object with a string `{field}` field")
        else:
            yield Item(line_no, str(row.get("id", line_no)), row[field])


def _csv_items(stream: TextIO, field: str) -> Iterator[Item | BadRow]:
    reader = csv.DictReader(stream)
    if reader.fieldnames is None or field not in reader.fieldnames:
        yield BadRow(1, f"the CSV header has no `{field}` column (columns: {reader.fieldnames})")
        return
    for row in reader:
        line_no = reader.line_num
        text = row.get(field)
        if text is None or None in row:
            yield BadRow(line_no, "wrong number of columns")
        else:
            yield Item(line_no, str(row.get("id") or line_no), text)


def guess_format(name: str) -> str:
    lowered = name.lower()
    if lowered.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if lowered.endswith((".csv", ".tsv")):
        return "csv"
    return "text"
