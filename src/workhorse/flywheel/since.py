"""`--since`: the earliest call a build reads, as an absolute time or a span back from now."""

from __future__ import annotations

import re
import time
from datetime import datetime

_SPAN = re.compile(r"^(\d+(?:\.\d+)?)([dhm])$")
_SECONDS = {"d": 86400, "h": 3600, "m": 60}


def parse_since(value: str, *, now: float | None = None) -> float:
    """Unix time from `2024-05-01`, `2024-05-01T08:30` (local time unless it has an offset or `Z`),
    or `7d` / `12h` / `30m` back from now. ValueError says what is accepted."""
    text = value.strip()
    span = _SPAN.match(text)
    if span:
        return (time.time() if now is None else now) - float(span[1]) * _SECONDS[span[2]]
    try:
        return datetime.fromisoformat(text).timestamp()  # a naive time is taken as local, as the user reads a clock
    except ValueError:
        raise ValueError(f"{value!r}: give an ISO date or datetime (2024-05-01, 2024-05-01T08:30) or a span (7d, 12h, 30m)") from None
