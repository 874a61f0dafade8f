"""The console's reads of the call log. Each page runs a bounded number of queries that the
schema's indexes answer without reading every call (migration 4): calls newest first with
keyset pagination (`id < before`), the review queue least confident first among the calls nobody
corrected, and the overview from the rollup's hourly sums."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from workhorse.calllog.database import Db
from workhorse.calllog.rollup import read_rollup
from workhorse.calllog.store import decoded
from workhorse.calllog.totals import CallTotals

PAGE_SIZE = 50
REVIEW_BATCH = 20
TEMPLATE_WINDOW = 20_000  # a logs task's newest calls counted on its templates page
_LIST_COLUMNS = ("id, created_at, task, task_version, source, confidence, escalated, escalation_failed, latency_ms, "
                 "substr(input, 1, 300) AS input, final_answer, feedback")
REVIEW_MODES = {  # the extra condition (`{distinct}`: `Db.distinct`) and the order
    "confidence": ("", "confidence, id"),
    "escalated": ("", "escalated DESC, confidence, id"),
    "disagreement": (" AND upstream_answer IS NOT NULL AND upstream_answer {distinct} output", "confidence, id"),
}


@dataclass(frozen=True)
class CallFilter:
    """What the calls page filters on; every field optional."""

    task: str | None = None
    version: int | None = None
    source: str | None = None  # local | upstream | fallback
    min_confidence: float | None = None
    max_confidence: float | None = None
    feedback: bool | None = None  # True: corrected calls only; False: uncorrected only
    since: float | None = None  # unix seconds
    until: float | None = None
    text: str | None = None  # in the input, case-insensitively (ASCII)

    def where(self, like: str = "LIKE") -> tuple[list[str], list[Any]]:
        """SQL conditions and their arguments; `like`: the database's case-insensitive LIKE (`Db.like`)."""
        clauses: list[str] = []
        args: list[Any] = []
        for column, operator, value in (
            ("task", "=", self.task), ("task_version", "=", self.version), ("source", "=", self.source),
            ("confidence", ">=", self.min_confidence), ("confidence", "<=", self.max_confidence),
            ("created_at", ">=", self.since), ("created_at", "<", self.until),
        ):
            if value is not None:
                clauses.append(f"{column} {operator} ?")
                args.append(value)
        if self.feedback is not None:
            clauses.append("feedback IS NOT NULL" if self.feedback else "feedback IS NULL")
        if self.text:
            clauses.append(f"input {like} ? ESCAPE '\\'")
            args.append("%" + self.text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
        return clauses, args


def list_calls(connection: Db, chosen: CallFilter, *, before: int | None = None,
               limit: int = PAGE_SIZE) -> tuple[list[dict[str, Any]], int | None]:
    """A page of calls, newest first, and the `before` of the next page (None on the last)."""
    clauses, args = chosen.where(connection.like)
    if before is not None:
        clauses.append("id < ?")
        args.append(before)
    where = "WHERE " + " AND ".join(clauses) if clauses else ""
    rows = connection.execute(f"SELECT {_LIST_COLUMNS} FROM calls {where} ORDER BY id DESC LIMIT ?",
                              (*args, limit + 1)).fetchall()
    page = [decoded(row) for row in rows[:limit]]
    return page, (page[-1]["id"] if len(rows) > limit else None)


def get_call(connection: Db, call_id: int) -> dict[str, Any] | None:
    row = connection.execute("SELECT * FROM calls WHERE id = ?", (call_id,)).fetchone()
    return decoded(row) if row else None


def review_queue(connection: Db, task: str, mode: str, *, skip: frozenset[int] = frozenset(),
                 limit: int = REVIEW_BATCH) -> list[dict[str, Any]]:
    """The next calls nobody corrected, the least sure first: by confidence; escalated ones first;
    or only those where the upstream's answer differs from the small model's."""
    extra, order = REVIEW_MODES[mode]
    extra = extra.format(distinct=connection.distinct)
    skipped = f" AND id NOT IN ({', '.join('?' * len(skip))})" if skip else ""
    rows = connection.execute(
        f"SELECT * FROM calls WHERE task = ? AND feedback IS NULL{extra}{skipped} ORDER BY {order} LIMIT ?",
        (task, *sorted(skip), limit),
    ).fetchall()
    return [decoded(row) for row in rows]


def review_counts(connection: Db, task: str) -> dict[str, int]:
    """Corrected calls of a task (the feedback index), for the queue's heading."""
    corrected = connection.execute("SELECT COUNT(*) FROM calls WHERE task = ? AND feedback IS NOT NULL", (task,)).fetchone()[0]
    return {"corrected": corrected}


@dataclass
class Overview:
    by_version: dict[tuple[str, int], CallTotals]
    by_hour: dict[int, CallTotals]
    total: CallTotals


def overview(connection: Db, *, since: float | None, task: str | None = None) -> Overview:
    """Sums per task and version, and per hour (the charts), from the rollup."""
    by_version: dict[tuple[str, int], CallTotals] = defaultdict(CallTotals)
    by_hour: dict[int, CallTotals] = defaultdict(CallTotals)
    total = CallTotals()
    for (task_name, version, hour), totals in read_rollup(connection, since=since, task=task):
        by_version[(task_name, version)].merge(totals)
        by_hour[hour].merge(totals)
        total.merge(totals)
    return Overview(dict(sorted(by_version.items())), dict(sorted(by_hour.items())), total)


def corrected_calls(connection: Db, task: str, *, limit: int = 20_000) -> list[dict[str, Any]]:
    """A task's corrected calls, newest first (the feedback index): the accuracy–escalation curve's data."""
    rows = connection.execute(
        "SELECT id, task_version, output, confidence, feedback FROM calls WHERE task = ? AND feedback IS NOT NULL "
        "ORDER BY id DESC LIMIT ?", (task, limit)).fetchall()
    return [decoded(row) for row in rows]


def template_counts(connection: Db, task: str, *, window: int = TEMPLATE_WINDOW) -> dict[int, dict[str, Any]]:
    """Per template id of a logs task, over its newest `window` calls: lines, and the newest line."""
    counts: dict[int, dict[str, Any]] = {}
    rows = connection.execute(
        f"SELECT {connection.json_integer('output', 'template_id')}, output, input "
        "FROM calls WHERE task = ? ORDER BY id DESC LIMIT ?", (task, window))
    for template_id, output, line in rows:
        if template_id is None:
            continue
        if template_id not in counts:
            counts[template_id] = {"template": json.loads(output).get("template"), "lines": 0, "example": line}
        counts[template_id]["lines"] += 1
    return counts


def task_names(connection: Db) -> list[str]:
    """Tasks with logged calls (from the rollup: a few rows an hour, not the calls)."""
    return [row[0] for row in connection.execute("SELECT DISTINCT task FROM call_rollup ORDER BY task")]
