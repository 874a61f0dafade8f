"""The rollup: the ledger's sums (`CallTotals`) per task, version and hour, written in the same
transaction as the calls and corrections they count, so that they always agree with the log.

Retention prunes calls but not their sums: the overview keeps the history of cost and volume
after the calls themselves are gone."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from workhorse.calllog.database import Db
from workhorse.calllog.totals import CallTotals

Key = tuple[str, int, int]  # task, version (0: none), unix hour


def key_of(row: dict[str, Any]) -> Key:
    return row["task"], row.get("task_version") or 0, int(row["created_at"] // 3600)


def rollup_rows(connection: Db, rows: Iterable[dict[str, Any]]) -> None:
    """Add calls, as stored (JSON columns encoded), to their hours' totals. Inside the caller's
    write transaction."""
    by_key: dict[Key, CallTotals] = defaultdict(CallTotals)
    for row in rows:
        by_key[key_of(row)].add(_judgeable(row))
    for key in sorted(by_key):  # one order for every writer: two batches never wait on each other's rows
        _merge_into(connection, key, by_key[key])


def rollup_feedback(connection: Db, call: dict[str, Any], feedback_json: str) -> None:
    """Count a correction of a stored call, replacing the one it had (if any)."""
    totals = CallTotals()
    final_answer = _loads(call["final_answer"])
    if call["feedback"] is not None:
        totals.judge(final_answer, json.loads(call["feedback"]), -1)
    totals.judge(final_answer, json.loads(feedback_json), +1)
    _merge_into(connection, key_of(call), totals)


def read_rollup(connection: Db, *, since: float | None = None, until: float | None = None,
                task: str | None = None) -> list[tuple[Key, CallTotals]]:
    """The hours that overlap [since, until), oldest first."""
    clauses, args = [], []
    if since is not None:
        clauses.append("hour >= ?")
        args.append(int(since // 3600))
    if until is not None:
        clauses.append("hour <= ?")
        args.append(int(until // 3600))
    if task is not None:
        clauses.append("task = ?")
        args.append(task)
    where = "WHERE " + " AND ".join(clauses) if clauses else ""
    rows = connection.execute(f"SELECT task, task_version, hour, totals FROM call_rollup {where} ORDER BY hour", args)
    return [((task_name, version, hour), CallTotals.from_json(text)) for task_name, version, hour, text in rows]


def _merge_into(connection: Db, key: Key, totals: CallTotals) -> None:
    """Add to an hour's totals: the row made if missing, then read locked (other processes writing
    the same log wait for this transaction) and written back."""
    connection.execute("INSERT INTO call_rollup (task, task_version, hour, totals) VALUES (?, ?, ?, '{}') "
                       "ON CONFLICT (task, task_version, hour) DO NOTHING", key)
    [found] = connection.execute("SELECT totals FROM call_rollup WHERE task = ? AND task_version = ? AND hour = ?"
                                 + connection.lock_rows, key).fetchone()
    connection.execute("UPDATE call_rollup SET totals = ? WHERE task = ? AND task_version = ? AND hour = ?",
                       (CallTotals.from_json(found).merge(totals).to_json(), *key))


def _judgeable(row: dict[str, Any]) -> dict[str, Any]:
    """A stored row with the two JSON columns that judging compares decoded (only when judged)."""
    if row.get("feedback") is None:
        return row
    return row | {"feedback": _loads(row["feedback"]), "final_answer": _loads(row.get("final_answer"))}


def _loads(text: str | None) -> Any:
    return json.loads(text) if text is not None else None
