"""The call log's schema as numbered migrations, applied in order on open.

`PRAGMA user_version` records how many have been applied; each migration runs in its own
write transaction with its version bump, so a crash mid-upgrade leaves the database at the
previous version, and processes opening one file at once apply each migration once. Append new
migrations; never edit an applied one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from workhorse.errors import CallLogError

Migration = str | Callable[[Any], None]  # SQL statements, or a step that needs Python (given the `Db`)


def _rollup_existing_calls(db) -> None:
    """Migration 5: add up the calls logged before the rollup existed."""
    from workhorse.calllog.rollup import rollup_rows

    cursor = db.execute("SELECT * FROM calls ORDER BY id")
    while rows := cursor.fetchmany(10_000):
        rollup_rows(db, [dict(row) for row in rows])


MIGRATIONS: tuple[Migration, ...] = (
    # 1: one row per answered call
    """
    CREATE TABLE calls (
        id INTEGER PRIMARY KEY,
        created_at REAL NOT NULL,              -- unix seconds
        task TEXT NOT NULL,
        task_version INTEGER,
        model TEXT NOT NULL,
        input TEXT NOT NULL,
        output TEXT,                           -- JSON: the small model's answer
        confidence REAL,
        latency_ms REAL,
        local_cpu_s REAL,                      -- engine time spent on the call
        prompt_tokens INTEGER,
        completion_tokens INTEGER,
        escalated INTEGER NOT NULL DEFAULT 0,
        escalation_reason TEXT,
        escalation_failed INTEGER NOT NULL DEFAULT 0,
        upstream_model TEXT,
        upstream_answer TEXT,                  -- JSON, placeholders restored
        upstream_prompt_tokens INTEGER,
        upstream_completion_tokens INTEGER,
        upstream_cost REAL,
        redactions TEXT,                       -- JSON: kind → count of values replaced before sending
        final_answer TEXT,                     -- JSON
        source TEXT NOT NULL,                  -- local | upstream | fallback
        feedback TEXT,                         -- JSON: a corrected label or fields
        feedback_at REAL
    );
    CREATE INDEX calls_task_time ON calls (task, created_at);
    CREATE INDEX calls_time ON calls (created_at);
    """,
    # 2: what the upstream request would have cost in tokens for calls that were not escalated,
    #    so the bill can be compared with sending everything to the large model
    """
    ALTER TABLE calls ADD COLUMN upstream_prompt_estimate INTEGER;
    """,
    # 3: the caller's own name for the item (a batch job's output file and row id), so that a
    #    resumed job finds the items it already answered instead of answering and logging them twice
    """
    ALTER TABLE calls ADD COLUMN request_ref TEXT;
    CREATE INDEX calls_request_ref ON calls (request_ref) WHERE request_ref IS NOT NULL;
    """,
    # 4: what the console shows of a call and who corrected it, and the indexes its pages walk
    #    (newest first within a task, version, source or feedback; least confident first among
    #    the calls nobody has reviewed); the rollup: the ledger's sums per task, version and hour
    #    (see calllog/rollup.py), kept when retention prunes the calls themselves
    """
    ALTER TABLE calls ADD COLUMN details TEXT;           -- JSON: the local answer's details (top probabilities, …)
    ALTER TABLE calls ADD COLUMN upstream_request TEXT;  -- the item as sent upstream, after redaction
    ALTER TABLE calls ADD COLUMN feedback_by TEXT;       -- who gave the feedback
    CREATE INDEX calls_task_id ON calls (task, id);
    CREATE INDEX calls_task_version_id ON calls (task, task_version, id);
    CREATE INDEX calls_source_id ON calls (source, id);
    CREATE INDEX calls_feedback_id ON calls (task, id) WHERE feedback IS NOT NULL;
    CREATE INDEX calls_review_confidence ON calls (task, confidence) WHERE feedback IS NULL;
    CREATE INDEX calls_review_escalated ON calls (task, escalated DESC, confidence) WHERE feedback IS NULL;
    CREATE INDEX calls_review_disagreement ON calls (task, confidence)
        WHERE feedback IS NULL AND upstream_answer IS NOT NULL AND upstream_answer IS NOT output;
    CREATE TABLE call_rollup (
        task TEXT NOT NULL,
        task_version INTEGER NOT NULL,     -- 0: calls logged without a version
        hour INTEGER NOT NULL,             -- unix hours (created_at // 3600)
        totals TEXT NOT NULL,              -- JSON: calllog.totals.CallTotals
        PRIMARY KEY (task, task_version, hour)
    ) WITHOUT ROWID;
    """,
    # 5: the rollup of the calls already logged
    _rollup_existing_calls,
)


def schema_version(connection) -> int:
    """The migrations applied to this database; a newer one than this workhorse knows is refused."""
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise CallLogError(
            f"the call log has schema version {version}, newer than this workhorse knows ({len(MIGRATIONS)})",
            "upgrade workhorse (pip install -U workhorse)",
        )
    return version


def migrate(db) -> int:
    """Apply the migrations this SQLite database (a `database.SqliteDb`) has not seen; returns the
    schema version.

    The connection must be in autocommit mode (`isolation_level=None`). The version is read again
    inside each migration's write transaction: two processes opening a fresh file at once then
    take turns, and the second finds the work done instead of creating the tables twice.
    """
    if schema_version(db) == len(MIGRATIONS):  # versions only grow: nothing to do, no lock taken
        return len(MIGRATIONS)
    while _apply_next(db):
        pass
    return len(MIGRATIONS)


def _apply_next(db) -> bool:
    """Apply the next migration atomically with its version bump; False when there is none."""
    with db.write():  # the write lock, before the version is read
        version = schema_version(db)
        if version == len(MIGRATIONS):
            return False
        apply_migration(db, MIGRATIONS[version])
        db.execute(f"PRAGMA user_version = {version + 1}")
    return True


def apply_migration(db, migration: Migration, dialect: Callable[[str], str] = lambda statement: statement) -> None:
    """Run one migration on `db` inside the caller's transaction: its statements one by one, put
    into the database's dialect (PostgreSQL's, see postgres.py), or its Python step."""
    if callable(migration):
        migration(db)
        return
    for statement in _statements(migration):
        db.execute(dialect(statement))


@contextmanager
def write_transaction(connection: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE … COMMIT, rolled back on any error (for migrations and the writer alike)."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            try:
                connection.execute("ROLLBACK")
            except sqlite3.Error:  # the first error is the one to raise; callers drop the connection
                pass
        raise


def _statements(script: str) -> list[str]:
    """A script's statements, one each, for `execute` inside a transaction (`executescript`
    would commit first). `complete_statement` knows semicolons inside strings and triggers."""
    statements, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    leftover = "\n".join(line for line in pending.splitlines() if not line.strip().startswith("--")).strip()
    if leftover:
        raise ValueError(f"a statement without its semicolon in a migration: {leftover[:80]}")
    return statements
