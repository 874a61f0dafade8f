"""Reading work items from JSONL, CSV or plain-text streams, one at a time (bounded memory).

Each item has an id (its `id` field, else its line number) and a text. A malformed row becomes
a `BadRow` naming its line, so a run can report it and carry on — including a line that is not
UTF-8: open streams with `errors="surrogateescape"` (see `open_items`), and such a line's
undecodable bytes show up here as lone surrogates.
"""

from __future__ import annotations

import csv
import json
import re
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


FORMATS = ("jsonl", "csv", "tsv", "text")


def open_items(path: str) -> TextIO:
    """A file for `read_items`: a UTF-8 BOM is dropped, bad bytes are kept for `read_items` to report."""
    return open(path, encoding="utf-8-sig", errors="surrogateescape", newline="")


def read_items(stream: TextIO, *, fmt: str, field: str = "text") -> Iterator[Item | BadRow]:
    """fmt: "jsonl", "csv", "tsv" or "text" (one item per line)."""
    for entry in _parse(stream, fmt, field):
        if isinstance(entry, Item) and _UNDECODABLE.search(entry.text):
            yield BadRow(entry.line, "not UTF-8 text")
        else:
            yield entry


_UNDECODABLE = re.compile("[\udc80-\udcff]")


def _parse(stream: TextIO, fmt: str, field: str) -> Iterator[Item | BadRow]:
    if fmt in ("csv", "tsv"):
        yield from _csv_items(stream, field, "\t" if fmt == "tsv" else ",")
        return
    for line_no, line in enumerate(stream, start=1):
        if line_no == 1:
            line = line.removeprefix("\ufeff")  # a BOM on stdin
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


def _csv_items(stream: TextIO, field: str, delimiter: str) -> Iterator[Item | BadRow]:
    reader = csv.DictReader(stream, delimiter=delimiter)
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
    if lowered.endswith(".tsv"):
        return "tsv"
    if lowered.endswith(".csv"):
        return "csv"
    return "text"
