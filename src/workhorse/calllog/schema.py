"""The call log's schema as numbered migrations, applied in order on open.

`PRAGMA user_version` records how many have been applied; each migration runs in its own
transaction, so a crash mid-upgrade leaves the database at the previous version. Append new
migrations; never edit an applied one.
"""

from __future__ import annotations

import sqlite3

MIGRATIONS: tuple[str, ...] = (
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
)


def migrate(connection: sqlite3.Connection) -> int:
    """Apply the migrations this database has not seen; returns the schema version."""
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise RuntimeError(
            f"the call log has schema version {version}, newer than this workhorse knows ({len(MIGRATIONS)}): upgrade workhorse"
        )
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        # executescript commits first; BEGIN … COMMIT makes each migration atomic with its version bump.
        connection.executescript(f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")
    return len(MIGRATIONS)
