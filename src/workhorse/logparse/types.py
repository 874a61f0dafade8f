"""Types of template parameters, from the value's shape alone (the same rules for every log).

The first rule that matches the whole value wins, most specific first.
"""

from __future__ import annotations

import ipaddress
import re

_RULES: list[tuple[str, re.Pattern]] = [
    ("url", re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://\S+")),
    ("email", re.compile(r"[^@\s]+@[^@\s]+\.[a-zA-Z]{2,}")),
    ("ip_port", re.compile(r"/?(?:\d{1,3}\.){3}\d{1,3}:\d{1,5}")),
    ("uuid", re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")),
    ("hex", re.compile(r"0[xX][0-9a-fA-F]+|[0-9a-fA-F]*(?:\d[a-fA-F]|[a-fA-F]\d)[0-9a-fA-F]*")),
    ("duration", re.compile(r"-?\d+(?:\.\d+)?\s?(?:ns|us|µs|ms|s|sec|secs|seconds|m|min|mins|minutes|h|hours)")),
    ("size", re.compile(r"\d+(?:\.\d+)?\s?(?:[KMGTP]i?B|[KMGTP]|bytes|B)", re.IGNORECASE)),
    ("time", re.compile(r"\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?")),
    ("date", re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?)?Z?")),
    ("number", re.compile(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?%?")),
    ("path", re.compile(r"(?:[A-Za-z]:)?[/\\][^\s:]*")),
    ("bool", re.compile(r"true|false", re.IGNORECASE)),
    ("hostname", re.compile(r"(?=.*[A-Za-z])[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")),
    ("id", re.compile(r"(?=.*\d)(?=.*[A-Za-z])[A-Za-z0-9_.:#-]+")),
    ("word", re.compile(r"[A-Za-z_][A-Za-z0-9_]*")),
]


def param_type(value: str) -> str:
    """`ip`, `ip_port`, `url`, `path`, `number`, `hex`, `duration`, … or `text`."""
    value = value.strip()
    if not value:
        return "empty"
    if _is_ip(value):
        return "ip"
    for name, pattern in _RULES:
        if pattern.fullmatch(value):
            return name
    return "text"


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value.lstrip("/"))
    except ValueError:
        return False
    return True
