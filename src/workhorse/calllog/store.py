"""The call log: every answered call in SQLite (WAL), written by one thread in batches.

Callers never wait on the disk inside the engine: `record()` queues the call and returns a
future. The writer thread commits everything queued so far in one transaction (group commit,
`synchronous=FULL`, so a commit is on disk when it returns) and then resolves the futures with
the rows' ids. A server answers a request after its future resolves, so every call a client saw
acknowledged survives a crash of the process or the machine.
"""

from __future__ import annotations

import json
import queue
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from workhorse.calllog.schema import migrate
from workhorse.errors import WorkhorseError

JSON_COLUMNS = ("output", "upstream_answer", "redactions", "final_answer", "feedback")
_STOP = object()


@dataclass
class CallRecord:
    task: str
    model: str
    input: str
    source: str  # local | upstream | fallback
    task_version: int | None = None
    output: Any = None
    confidence: float | None = None
    latency_ms: float | None = None
    local_cpu_s: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    escalated: bool = False
    escalation_reason: str | None = None
    escalation_failed: bool = False
    upstream_model: str | None = None
    upstream_answer: Any = None
    upstream_prompt_tokens: int | None = None
    upstream_completion_tokens: int | None = None
    upstream_cost: float | None = None
    redactions: dict[str, int] | None = None
    upstream_prompt_estimate: int | None = None  # tokens of the upstream request had the call escalated
    request_ref: str | None = None  # the caller's name for the item (see `find_refs`)
    final_answer: Any = None
    created_at: float = field(default_factory=time.time)

    def row(self) -> dict[str, Any]:
        values = asdict(self)
        for column in JSON_COLUMNS:
            if column in values and values[column] is not None:
                values[column] = json.dumps(values[column], ensure_ascii=False)
        values["escalated"] = int(self.escalated)
        values["escalation_failed"] = int(self.escalation_failed)
        return values


@dataclass(frozen=True)
class Retention:
    days: float | None = None  # delete calls older than this
    max_rows: int | None = None  # keep at most this many (the newest)


class CallLog:
    def __init__(self, path: str | Path, *, retention: Retention = Retention(), batch_max: int = 512) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.retention = retention
        self.batch_max = batch_max
        with self._connect() as connection:
            migrate(connection)
        self._queue: queue.Queue = queue.Queue()
        self._writer = threading.Thread(target=self._write_loop, name="calllog-writer", daemon=True)
        self._writer.start()

    # -- writing (any thread) ----------------------------------------------------------------
    def record(self, call: CallRecord) -> Future:
        """Queue a call; the future resolves with its id once it is committed to disk."""
        future: Future = Future()
        if not self._writer.is_alive():
            raise WorkhorseError(f"the call log {self.path} is closed", "open a new CallLog")
        self._queue.put(("insert", call.row(), future))
        return future

    def feedback(self, call_id: int, value: Any) -> Future:
        """Record a correction for a call; resolves with False when there is no such call."""
        future: Future = Future()
        self._queue.put(("feedback", (call_id, json.dumps(value, ensure_ascii=False)), future))
        return future

    def close(self) -> None:
        """Commit what is queued and stop the writer."""
        if self._writer.is_alive():
            self._queue.put(_STOP)
            self._writer.join()

    # -- reading (any thread: WAL readers do not block the writer) -----------------------------
    def get(self, call_id: int) -> dict[str, Any] | None:
        with self._connect() as connection:
            row = connection.execute("SELECT * FROM calls WHERE id = ?", (call_id,)).fetchone()
        return _decoded(row) if row else None

    def list(self, *, task: str | None = None, limit: int = 50, since: float | None = None) -> list[dict[str, Any]]:
        """The newest calls first."""
        where, args = _filters(task, since)
        with self._connect() as connection:
            rows = connection.execute(f"SELECT * FROM calls {where} ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
        return [_decoded(r) for r in rows]

    def iterate(self, *, task: str | None = None, since: float | None = None) -> Iterator[dict[str, Any]]:
        """Every call in id order, streamed (for export)."""
        where, args = _filters(task, since)
        with self._connect() as connection:
            for row in connection.execute(f"SELECT * FROM calls {where} ORDER BY id", args):
                yield _decoded(row)

    def find_refs(self, refs: list[str]) -> dict[str, dict[str, Any]]:
        """The logged calls with these request refs (the newest of each), by ref."""
        found: dict[str, dict[str, Any]] = {}
        with self._connect() as connection:
            for start in range(0, len(refs), 500):  # SQLite's limit on bound parameters
                chunk = refs[start : start + 500]
                marks = ", ".join("?" * len(chunk))
                query = f"SELECT * FROM calls WHERE request_ref IN ({marks}) ORDER BY id"
                for row in connection.execute(query, chunk):
                    found[row["request_ref"]] = _decoded(row)
        return found

    def count(self) -> int:
        with self._connect() as connection:
            return connection.execute("SELECT COUNT(*) FROM calls").fetchone()[0]

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        connection.row_factory = sqlite3.Row
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")  # a commit is on disk when it returns
        return connection

    # -- the writer thread ----------------------------------------------------------------------
    def _write_loop(self) -> None:
        connection = self._connect()
        last_prune = 0.0
        try:
            while True:
                jobs = [self._queue.get()]
                while len(jobs) < self.batch_max:
                    try:
                        jobs.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                stop = _STOP in jobs
                self._commit(connection, [job for job in jobs if job is not _STOP])
                if time.monotonic() - last_prune > 60:
                    self._prune(connection)
                    last_prune = time.monotonic()
                if stop:
                    return
        finally:
            connection.close()

    def _commit(self, connection: sqlite3.Connection, jobs: list) -> None:
        if not jobs:
            return
        results: list[tuple[Future, Any]] = []
        try:
            connection.execute("BEGIN IMMEDIATE")
            for kind, payload, future in jobs:
                if kind == "insert":
                    columns = ", ".join(payload)
                    marks = ", ".join(f":{name}" for name in payload)
                    cursor = connection.execute(f"INSERT INTO calls ({columns}) VALUES ({marks})", payload)
                    results.append((future, cursor.lastrowid))
                else:
                    call_id, value = payload
                    cursor = connection.execute(
                        "UPDATE calls SET feedback = ?, feedback_at = ? WHERE id = ?", (value, time.time(), call_id)
                    )
                    results.append((future, cursor.rowcount == 1))
            connection.execute("COMMIT")
        except sqlite3.Error as error:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            for _, _, future in jobs:
                future.set_exception(WorkhorseError(f"cannot write the call log {self.path}: {error}", "check the disk"))
            return
        for future, value in results:
            future.set_result(value)

    def _prune(self, connection: sqlite3.Connection) -> None:
        if self.retention.days is not None:
            connection.execute("DELETE FROM calls WHERE created_at < ?", (time.time() - self.retention.days * 86400,))
        if self.retention.max_rows is not None:
            connection.execute(
                "DELETE FROM calls WHERE id <= (SELECT id FROM calls ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (self.retention.max_rows,),
            )


def _filters(task: str | None, since: float | None) -> tuple[str, tuple]:
    clauses, args = [], []
    if task is not None:
        clauses.append("task = ?")
        args.append(task)
    if since is not None:
        clauses.append("created_at >= ?")
        args.append(since)
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), tuple(args)


def _decoded(row: sqlite3.Row) -> dict[str, Any]:
    values = dict(row)
    for column in JSON_COLUMNS:
        if values.get(column) is not None:
            values[column] = json.loads(values[column])
    values["escalated"] = bool(values["escalated"])
    values["escalation_failed"] = bool(values["escalation_failed"])
    return values
