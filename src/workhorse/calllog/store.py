"""The call log: every answered call in SQLite (WAL), written by one thread in batches.

Callers never wait on the disk inside the engine: `record()` queues the call and returns a
future. The writer thread commits everything queued so far in one transaction (group commit,
`synchronous=FULL`, so a commit is on disk when it returns) and then resolves the futures with
the rows' ids. A server answers a request after its future resolves, so every call a client saw
acknowledged survives a crash of the process or the machine.

The writer outlives every error: a batch that cannot be written (the file locked by another
process, the disk full) fails its futures with `CallLogError` (a 503 from the server) and the
next batch is tried on a fresh connection. Waiters use `wait_committed` / `committed`, which give
up after `CALL_LOG_TIMEOUT_S`. Retention never deletes a call that carries feedback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Self

from workhorse.calllog.database import Db, open_database
from workhorse.calllog.rollup import rollup_feedback, rollup_rows
from workhorse.errors import CallLogError

log = logging.getLogger(__name__)

JSON_COLUMNS = ("output", "details", "upstream_answer", "redactions", "final_answer", "feedback")
# How long a connection waits for another's write lock (another process writing or pruning)
# before its statement fails with SQLITE_BUSY.
BUSY_TIMEOUT_S = 10.0
# The longest anyone waits for the writer (a commit's acknowledgement, closing). Longer than two
# busy waits, so that a batch queued behind one that waited on the lock still gets its turn.
CALL_LOG_TIMEOUT_S = 30.0
PRUNE_EVERY_S = 60.0
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
    details: dict[str, Any] | None = None  # the local answer's details: top probabilities, validity, …
    latency_ms: float | None = None
    local_cpu_s: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    escalated: bool = False
    escalation_reason: str | None = None
    escalation_failed: bool = False
    upstream_model: str | None = None
    upstream_request: str | None = None  # the item as sent upstream, after redaction
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
                values[column] = json.dumps(values[column], ensure_ascii=False, default=_plain)
        values["escalated"] = int(self.escalated)
        values["escalation_failed"] = int(self.escalation_failed)
        return values


def _plain(value: Any) -> Any:
    """JSON for what answers carry besides plain types: numpy scalars and arrays (probabilities)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot log a value of type {type(value).__name__}")


@dataclass(frozen=True)
class Retention:
    """What the writer prunes, once after its first batch and then every minute. Calls that carry
    feedback (corrections: the best training data) are never pruned and do not count in `max_rows`."""

    days: float | None = None  # delete calls older than this
    max_rows: int | None = None  # keep at most this many calls without feedback (the newest)

    @property
    def active(self) -> bool:
        return self.days is not None or self.max_rows is not None


# Every column a call has at the newest schema, so that rows read from an older file have them all.
_COLUMNS = ("id", *(f.name for f in fields(CallRecord)), "feedback", "feedback_at", "feedback_by")


class CallLog:
    """The call log at `target` — a SQLite file, or a PostgreSQL URL (`postgresql://…`): opened for
    writing (migrated, with a writer thread), or with `CallLog.open_readonly` for reading only."""

    def __init__(self, target: str | Path, *, retention: Retention = Retention(), batch_max: int = 512,
                 busy_timeout_s: float = BUSY_TIMEOUT_S, readonly: bool = False) -> None:
        self.database = open_database(target, readonly=readonly, busy_timeout_s=busy_timeout_s)
        self.path = self.database.where  # for messages: the file, or the URL without its password
        self.retention = retention
        self.batch_max = batch_max
        self.busy_timeout_s = busy_timeout_s
        self.readonly = readonly
        self._lock = threading.Lock()  # orders `_submit` against `close`: no job queued behind the stop
        self._closed = False
        self._queue: queue.Queue = queue.Queue()
        self._writer: threading.Thread | None = None
        if readonly:
            try:
                self.schema_version = self.database.check_readable()
            except self.database.errors as error:
                raise self.database.error("read", error) from error
            return
        try:
            with closing(self.database.connect_writer()) as db:
                self.schema_version = self.database.migrate(db)
        except self.database.errors as error:
            raise self.database.error("open", error) from error
        self._writer = threading.Thread(target=self._write_loop, name="calllog-writer", daemon=True)
        self._writer.start()

    @classmethod
    def open_readonly(cls, path: str | Path, *, busy_timeout_s: float = BUSY_TIMEOUT_S) -> CallLog:
        """For reading only (SQLite's `mode=ro`, PostgreSQL's read-only transactions): nothing is migrated, no writer is started, and a
        log of an older schema reads with the newer columns as None."""
        return cls(path, busy_timeout_s=busy_timeout_s, readonly=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing (any thread) ----------------------------------------------------------------
    def record(self, call: CallRecord) -> Future:
        """Queue a call; the future resolves with its id once it is committed to disk (or fails
        with CallLogError). Wait on it with `wait_committed` or `committed`."""
        return self._submit("insert", call.row())

    def feedback(self, call_id: int, value: Any, *, by: str | None = None) -> Future:
        """Record a correction for a call, and who gave it; resolves with False when there is no such call."""
        return self._submit("feedback", (call_id, json.dumps(value, ensure_ascii=False), by))

    def close(self, timeout_s: float = CALL_LOG_TIMEOUT_S) -> None:
        """Commit what is queued and stop the writer (waiting at most `timeout_s`)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._writer is None:
                self.database.close()
                return
            self._queue.put(_STOP)
        self._writer.join(timeout_s)
        if self._writer.is_alive():  # its waiters get CallLogError at their own deadlines
            log.warning("the call log %s did not finish writing within %.0f s", self.path, timeout_s)
            return
        self.database.close()

    def _submit(self, kind: str, payload: Any) -> Future:
        with self._lock:
            if self._writer is None:
                raise CallLogError(f"the call log {self.path} is open read-only", "open it with CallLog(path) to write")
            if self._closed or not self._writer.is_alive():
                raise CallLogError(f"the call log {self.path} is closed", "the server or run is shutting down; try again")
            future: Future = Future()
            self._queue.put((kind, payload, future))
        return future

    # -- reading (any thread: WAL readers do not block the writer) -----------------------------
    def get(self, call_id: int) -> dict[str, Any] | None:
        with self.reading() as connection:
            row = connection.execute("SELECT * FROM calls WHERE id = ?", (call_id,)).fetchone()
        return decoded(row) if row else None

    def list(self, *, task: str | None = None, limit: int = 50, since: float | None = None) -> list[dict[str, Any]]:
        """The newest calls first."""
        where, args = _filters(task, since)
        with self.reading() as connection:
            rows = connection.execute(f"SELECT * FROM calls {where} ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
        return [decoded(r) for r in rows]

    def iterate(self, *, task: str | None = None, since: float | None = None) -> Iterator[dict[str, Any]]:
        """Every call in id order, streamed (for export)."""
        where, args = _filters(task, since)
        with self.reading() as connection:
            for row in connection.stream(f"SELECT * FROM calls {where} ORDER BY id", args):
                yield decoded(row)

    def find_refs(self, refs: list[str]) -> dict[str, dict[str, Any]]:
        """The logged calls with these request refs (the newest of each), by ref."""
        found: dict[str, dict[str, Any]] = {}
        with self.reading() as connection:
            for start in range(0, len(refs), 500):  # SQLite's limit on bound parameters
                chunk = refs[start : start + 500]
                marks = ", ".join("?" * len(chunk))
                query = f"SELECT * FROM calls WHERE request_ref IN ({marks}) ORDER BY id"
                for row in connection.execute(query, chunk):
                    found[row["request_ref"]] = decoded(row)
        return found

    def count(self) -> int:
        with self.reading() as connection:
            return connection.execute("SELECT COUNT(*) FROM calls").fetchone()[0]

    @contextmanager
    def reading(self) -> Iterator[Db]:
        """A connection for one read (rows by column name or position; decode calls with
        `decoded`); the database's errors become CallLogError (a 503 from the server)."""
        try:
            with closing(self.database.connect()) as db:
                yield db
        except self.database.errors as error:
            raise self.database.error("read", error) from error

    # -- the writer thread ----------------------------------------------------------------------
    def _write_loop(self) -> None:
        connection: Db | None = None
        next_prune = 0.0  # monotonic time: the first batch prunes
        while True:
            jobs = self._next_batch()
            stop = _STOP in jobs
            connection = self._write_batch(connection, [job for job in jobs if job is not _STOP])
            if self.retention.active and time.monotonic() >= next_prune:
                connection = self._prune_safely(connection)
                next_prune = time.monotonic() + PRUNE_EVERY_S
            if stop:
                _discard(connection)
                return

    def _next_batch(self) -> list:
        jobs = [self._queue.get()]
        while len(jobs) < self.batch_max:
            try:
                jobs.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return jobs

    def _write_batch(self, connection: Db | None, jobs: list) -> Db | None:
        """Commit `jobs` and resolve their futures. On any error every job fails with CallLogError
        and the connection is dropped (the next batch opens a fresh one): the writer goes on."""
        if not jobs:
            return connection
        try:
            connection = connection or self.database.connect_writer()
            results = _commit(connection, jobs)
        except Exception as error:  # not only SQLite's: nothing may end the writer while callers wait
            failure = self.database.error("write", error)
            log.error("%s", failure)
            for _, _, future in jobs:
                _settle(future, error=failure)
            _discard(connection)
            return None
        for (_, _, future), result in zip(jobs, results, strict=True):
            _settle(future, result)
        return connection

    def _prune_safely(self, connection: Db | None) -> Db | None:
        try:
            connection = connection or self.database.connect_writer()
            self._prune(connection)
            return connection
        except Exception as error:  # retried at the next prune; the calls stay meanwhile
            log.warning("cannot prune the call log %s (tried again in %.0f s): %s", self.path, PRUNE_EVERY_S, error)
            _discard(connection)
            return None

    def _prune(self, connection: Db) -> None:
        """Delete old calls, in one transaction; calls with feedback are kept."""
        with connection.write():
            if self.retention.days is not None:
                connection.execute("DELETE FROM calls WHERE feedback IS NULL AND created_at < ?",
                                   (time.time() - self.retention.days * 86400,))
            if self.retention.max_rows is not None:
                connection.execute(
                    "DELETE FROM calls WHERE feedback IS NULL AND id <= "
                    "(SELECT id FROM calls WHERE feedback IS NULL ORDER BY id DESC LIMIT 1 OFFSET ?)",
                    (self.retention.max_rows,),
                )


def wait_committed(future: Future, timeout_s: float = CALL_LOG_TIMEOUT_S) -> Any:
    """What a `record` or `feedback` future resolves with, waiting at most `timeout_s`."""
    try:
        return future.result(timeout_s)
    except TimeoutError:
        raise _late(timeout_s) from None


async def committed(future: Future, timeout_s: float = CALL_LOG_TIMEOUT_S) -> Any:
    """`wait_committed` for async code: the event loop is not blocked while the writer works."""
    try:
        return await asyncio.wait_for(asyncio.wrap_future(future), timeout_s)
    except TimeoutError:
        raise _late(timeout_s) from None


def _late(timeout_s: float) -> CallLogError:
    return CallLogError(f"the call log did not commit within {timeout_s:.0f} s",
                        "the disk is slow or another process holds the call log's write lock; try again")


def _commit(connection: Db, jobs: list) -> list[Any]:
    """Apply every job in one transaction; their results (ids, found-or-not) once committed."""
    results, inserted = [], []
    with connection.write():
        for kind, payload, _ in jobs:
            if kind == "insert":
                results.append(connection.insert("calls", payload))
                inserted.append(payload)
            else:
                results.append(_correct(connection, *payload))
        rollup_rows(connection, inserted)
    return results


def _correct(connection: Db, call_id: int, value: str, by: str | None) -> bool:
    """Store a correction and count it in the rollup; False when there is no such call."""
    call = connection.execute(
        "SELECT task, task_version, created_at, final_answer, feedback FROM calls WHERE id = ?" + connection.lock_rows, (call_id,)
    ).fetchone()
    if call is None:
        return False
    rollup_feedback(connection, dict(call), value)
    connection.execute("UPDATE calls SET feedback = ?, feedback_at = ?, feedback_by = ? WHERE id = ?",
                       (value, time.time(), by, call_id))
    return True


def _settle(future: Future, result: Any = None, *, error: BaseException | None = None) -> None:
    """Resolve a caller's future. One its waiter cancelled (a client that went away) is skipped:
    setting it would raise InvalidStateError in the writer."""
    if not future.set_running_or_notify_cancel():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _discard(connection: Db | None) -> None:
    if connection is not None:
        try:
            connection.close()
        except Exception:  # already broken: the error that dropped it is the one reported
            pass


def _filters(task: str | None, since: float | None) -> tuple[str, tuple]:
    clauses, args = [], []
    if task is not None:
        clauses.append("task = ?")
        args.append(task)
    if since is not None:
        clauses.append("created_at >= ?")
        args.append(since)
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), tuple(args)


def decoded(row: Any) -> dict[str, Any]:
    values = dict.fromkeys(_COLUMNS) | dict(row)  # columns an older file lacks read as None
    for column in JSON_COLUMNS:
        if values.get(column) is not None:
            values[column] = json.loads(values[column])
    values["escalated"] = bool(values["escalated"])
    values["escalation_failed"] = bool(values["escalation_failed"])
    return values
