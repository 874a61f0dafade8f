"""Where workhorse keeps its files."""

from __future__ import annotations

import os
from pathlib import Path


def workhorse_home() -> Path:
    """`WORKHORSE_HOME`, else `~/.cache/workhorse`; created on first use."""
    home = Path(os.environ.get("WORKHORSE_HOME") or Path.home() / ".cache" / "workhorse")
    home.mkdir(parents=True, exist_ok=True)
    return home


def models_dir() -> Path:
    path = workhorse_home() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres(target: str | Path) -> bool:
    """A call log given as a PostgreSQL URL rather than a SQLite file."""
    return isinstance(target, str) and target.startswith(POSTGRES_SCHEMES)


def call_log_path() -> Path | str:
    """The call log: `WORKHORSE_CALL_LOG` (a SQLite file, or a `postgresql://` URL, kept a string),
    else `calls.db` in the workhorse home."""
    chosen = os.environ.get("WORKHORSE_CALL_LOG")
    if chosen and is_postgres(chosen):
        return chosen
    return Path(chosen or workhorse_home() / "calls.db")


def prices_path() -> Path:
    """The price table that overrides the built-in list prices (`workhorse logs stats`)."""
    return workhorse_home() / "prices.yaml"


def heads_cache_dir() -> Path:
    """Classification heads built from task specs when they load (examples and descriptions modes)."""
    path = workhorse_home() / "heads"
    path.mkdir(parents=True, exist_ok=True)
    return path


def checkpoints_dir() -> Path:
    """Checkpoints of training runs in progress, so that an interrupted run resumes."""
    path = workhorse_home() / "checkpoints"
    path.mkdir(parents=True, exist_ok=True)
    return path
