"""Where the call log lives: a SQLite file (the default, embedded) or a PostgreSQL database
(`postgresql://…`, for several servers or a Ray cluster writing one log).

The call log's code writes one SQL for both: `?` placeholders, `ON CONFLICT … DO UPDATE`, rows read
by column name or position. A `Database` opens connections (`Db`) that carry the few differences:
how a write transaction starts, how a row is locked for update, a case-insensitive `LIKE`, a JSON
field, inequality that treats NULL as a value, and streaming a long result."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from workhorse.errors import CallLogError
from workhorse.paths import is_postgres


class Db(Protocol):
    """One connection, in autocommit mode outside `write()`."""

    like: str  # a case-insensitive LIKE
    distinct: str  # `a <distinct> b`: true when they differ, NULL being a value
    lock_rows: str  # appended to a SELECT inside `write()` to lock what it reads

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Any: ...

    def stream(self, sql: str, args: Sequence[Any] = ()) -> Iterator[Any]: ...

    def insert(self, table: str, values: dict[str, Any]) -> int: ...

    def write(self) -> Any: ...  # a context manager: one write transaction

    def json_integer(self, column: str, key: str) -> str: ...

    def close(self) -> None: ...


class Database(Protocol):
    where: str  # for messages: the file, or the URL without its password
    errors: tuple[type[BaseException], ...]

    def connect(self) -> Db: ...

    def connect_writer(self) -> Db: ...

    def migrate(self, db: Db) -> int: ...

    def check_readable(self) -> int: ...

    def error(self, action: str, error: BaseException) -> CallLogError: ...

    def close(self) -> None: ...


def open_database(target: str | Path, *, readonly: bool, busy_timeout_s: float) -> Database:
    if is_postgres(target):
        from workhorse.calllog.postgres import PostgresDatabase

        return PostgresDatabase(str(target), readonly=readonly, busy_timeout_s=busy_timeout_s)
    return SqliteDatabase(Path(target), readonly=readonly, busy_timeout_s=busy_timeout_s)


def without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


# -- SQLite ---------------------------------------------------------------------------------------
HINT_NOT_A_LOG = "pass the call log that `workhorse serve` or `workhorse run` writes (--db FILE)"
# Hints by SQLite's error name (its prefix): what to do about a failed open, read or write.
_SQLITE_HINTS = (
    ("SQLITE_BUSY", "another process holds the call log's write lock; try again"),
    ("SQLITE_LOCKED", "another process holds the call log's write lock; try again"),
    ("SQLITE_FULL", "the disk is full: free some space"),
    ("SQLITE_IOERR", "the disk refused a read or write: check its free space and health"),
    ("SQLITE_NOTADB", HINT_NOT_A_LOG),
    ("SQLITE_CORRUPT", "the file is damaged: restore it from a backup, or move it aside to start a new log"),
    ("SQLITE_READONLY", "the file or its folder is read-only: give this process write access"),
    ("SQLITE_CANTOPEN", "check that the file exists and can be opened"),
)


class SqliteDb:
    like = "LIKE"  # case-insensitive for ASCII in SQLite
    distinct = "IS NOT"
    lock_rows = ""  # BEGIN IMMEDIATE already holds the whole file's write lock

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def execute(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self.connection.execute(sql, args)

    def stream(self, sql: str, args: Sequence[Any] = ()) -> Iterator[sqlite3.Row]:
        yield from self.connection.execute(sql, args)

    def insert(self, table: str, values: dict[str, Any]) -> int:
        columns = ", ".join(values)
        marks = ", ".join(f":{name}" for name in values)
        return self.connection.execute(f"INSERT INTO {table} ({columns}) VALUES ({marks})", values).lastrowid

    @contextmanager
    def write(self) -> Iterator[None]:
        from workhorse.calllog.schema import write_transaction

        with write_transaction(self.connection):
            yield

    def json_integer(self, column: str, key: str) -> str:
        return f"json_extract({column}, '$.{key}')"

    def close(self) -> None:
        self.connection.close()


class SqliteDatabase:
    errors = (sqlite3.Error,)

    def __init__(self, path: Path, *, readonly: bool, busy_timeout_s: float) -> None:
        self.path = path
        self.where = str(path)
        self.readonly = readonly
        self.busy_timeout_s = busy_timeout_s
        if not readonly:
            path.parent.mkdir(parents=True, exist_ok=True)

    def connect(self) -> SqliteDb:
        if self.readonly:  # mode=ro: this connection can neither migrate nor write
            connection = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True,
                                         timeout=self.busy_timeout_s, isolation_level=None)
        else:
            connection = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)
        connection.row_factory = sqlite3.Row
        return SqliteDb(connection)

    def connect_writer(self) -> SqliteDb:
        db = self.connect()
        try:
            self._use_wal(db.connection)
            db.execute("PRAGMA synchronous=FULL")  # a commit is on disk when it returns
        except BaseException:
            db.close()
            raise
        return db

    def migrate(self, db: Db) -> int:
        from workhorse.calllog.schema import migrate

        return migrate(db)

    def check_readable(self) -> int:
        from workhorse.calllog.schema import schema_version

        db = self.connect()
        try:
            version = schema_version(db)
            table = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'calls'").fetchone()
        finally:
            db.close()
        if table is None:
            raise CallLogError(f"{self.path} is not a call log (it has no calls table)", HINT_NOT_A_LOG)
        return version

    def _use_wal(self, connection: sqlite3.Connection) -> None:
        """Switch a file to WAL (it stays so). The switch needs the file to itself for a moment,
        and when another connection opens a fresh file at the same time SQLite answers BUSY at
        once instead of waiting: wait here, as long as for a lock."""
        deadline = time.monotonic() + self.busy_timeout_s
        while True:
            try:
                connection.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as error:
                if getattr(error, "sqlite_errorname", "") != "SQLITE_BUSY" or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def error(self, action: str, error: BaseException) -> CallLogError:
        name = getattr(error, "sqlite_errorname", "") or ""
        hint = next((text for prefix, text in _SQLITE_HINTS if name.startswith(prefix)), "check the file and its disk")
        return CallLogError(f"cannot {action} the call log {self.path}: {error}", hint)

    def close(self) -> None:
        pass  # connections are opened per use
