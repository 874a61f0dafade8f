"""Users' data files — JSONL, CSV, TSV or plain text — read one row at a time (bounded memory).

    for row in read_rows(open_rows("tickets.csv"), fmt="csv"):
        if isinstance(row, BadRow): report(row.line, row.problem)

The one reader behind `workhorse run` (which skips bad rows and goes on), `fit` and `eval` (which
stop with the list). A row has a text, its line, its own `id` if it gives one, and its targets
when labelled: `label` (JSONL `label`; CSV `label`, `intent` or `category`), `labels` (a list),
`fields` (an object) or `answer` (JSONL: an extract or convert task's whole answer, any JSON value). Anything wrong with a row becomes a `BadRow` naming its line — including a
line that is not UTF-8: streams are opened with `errors="surrogateescape"` (see `open_rows`), and
such a line's undecodable bytes show up here as lone surrogates.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TextIO

FORMATS = ("jsonl", "csv", "tsv", "text")
LABEL_COLUMNS = ("label", "intent", "category")
JSONL_HINT = (
    'each line is one JSON object with a non-empty "text" and optionally "label" (a string), '
    '"labels" (a list of strings), "fields" (an object), "answer" (an extract or convert answer) and "id"'
)
CSV_HINT = "the file needs a header with a 'text' column, optionally 'label' (or 'intent', 'category') and 'id'"


@dataclass(frozen=True)
class Row:
    line: int
    text: str
    id: str | None = None  # the row's own id, if it has one
    label: str | None = None
    labels: tuple[str, ...] = ()
    fields: dict[str, Any] | None = None
    answer: Any = None

    @property
    def key(self) -> str:
        """The row's id, else its line number."""
        return self.id if self.id is not None else str(self.line)


@dataclass(frozen=True)
class BadRow:
    line: int
    problem: str


def guess_format(name: str) -> str:
    lowered = name.lower()
    if lowered.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if lowered.endswith(".tsv"):
        return "tsv"
    if lowered.endswith(".csv"):
        return "csv"
    return "text"


def open_rows(path: str) -> TextIO:
    """A file for `read_rows`: a UTF-8 BOM is dropped, bad bytes are kept for `read_rows` to report."""
    return open(path, encoding="utf-8-sig", errors="surrogateescape", newline="")


def read_rows(stream: TextIO, *, fmt: str, field: str = "text") -> Iterator[Row | BadRow]:
    """fmt: one of FORMATS; `field`: the JSON field or CSV column holding the text."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}")
    rows = _csv_rows(stream, field, "\t" if fmt == "tsv" else ",") if fmt in ("csv", "tsv") else _line_rows(stream, fmt, field)
    for row in rows:
        if isinstance(row, Row) and _UNDECODABLE.search(row.text):
            yield BadRow(row.line, "not UTF-8 text")
        elif isinstance(row, Row) and not row.text.strip():
            yield BadRow(row.line, "missing or empty text")
        else:
            yield row


_UNDECODABLE = re.compile("[\udc80-\udcff]")


def _line_rows(stream: TextIO, fmt: str, field: str) -> Iterator[Row | BadRow]:
    for line_no, line in enumerate(stream, start=1):
        if line_no == 1:
            line = line.removeprefix("\ufeff")  # a BOM on stdin
        if not line.strip():
            continue
        if fmt == "text":
            yield Row(line_no, line.rstrip("\r\n"))
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            yield BadRow(line_no, f"not valid JSON ({error.msg} at column {error.colno})")
            continue
        yield Row(line_no, value) if isinstance(value, str) else _json_row(line_no, value, field)


def _json_row(line_no: int, value: Any, field: str) -> Row | BadRow:
    if not isinstance(value, dict):
        return BadRow(line_no, f'expected a JSON object with a "{field}", got {type(value).__name__}')
    text, label, labels, fields = value.get(field), value.get("label"), value.get("labels"), value.get("fields")
    if not isinstance(text, str):
        return BadRow(line_no, f'missing or empty "{field}" (a string)')
    if label is not None and not isinstance(label, str):
        return BadRow(line_no, '"label" must be a string')
    if labels is not None and not (isinstance(labels, list) and all(isinstance(x, str) for x in labels)):
        return BadRow(line_no, '"labels" must be a list of strings')
    if fields is not None and not isinstance(fields, dict):
        return BadRow(line_no, '"fields" must be an object')
    if label is not None and labels is not None:
        return BadRow(line_no, 'give "label" or "labels", not both')
    row_id = value.get("id")
    return Row(line_no, text, None if row_id is None else str(row_id), label, tuple(labels or ()), fields, value.get("answer"))


def _csv_rows(stream: TextIO, field: str, delimiter: str) -> Iterator[Row | BadRow]:
    reader = csv.DictReader(stream, delimiter=delimiter)
    try:
        header = reader.fieldnames
        if header is None or field not in header:
            found = ", ".join(header or []) or "nothing"
            yield BadRow(1, f"the header has no `{field}` column (found: {found})")
            return
        label_column = next((c for c in LABEL_COLUMNS if c in header), None)
        for row in reader:
            line_no = reader.line_num
            if None in row or None in row.values():
                yield BadRow(line_no, f"expected {len(header)} columns like the header")
                continue
            label = (row[label_column] or None) if label_column else None
            yield Row(line_no, row[field], row.get("id") or None, label)
    except csv.Error as error:  # the reader cannot go on past a malformed record
        yield BadRow(reader.line_num, f"malformed CSV ({error}); check the quoting")
