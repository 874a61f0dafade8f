"""What a detector returns, and the helpers the detectors share."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import NamedTuple


class Span(NamedTuple):
    start: int
    end: int
    kind: str


Detector = Callable[[str], list[Span]]


def spans_of(pattern: re.Pattern[str], text: str, kind: str, group: int | str = 0) -> list[Span]:
    return [Span(m.start(group), m.end(group), kind) for m in pattern.finditer(text) if m.end(group) > m.start(group)]


def ascii_digits(text: str) -> str:
    return "".join(ch for ch in text if "0" <= ch <= "9")


def candidates(pattern: re.Pattern[str], text: str, accept: Callable[[str], str | None]) -> Iterator[tuple[int, str]]:
    """Matches of `pattern` that `accept` keeps (possibly trimmed to a prefix), searched so that a
    rejected candidate does not hide a valid one starting at a later group of the same run
    (finditer would resume after the whole rejected match)."""
    position = 0
    while (match := pattern.search(text, position)) is not None:
        kept = accept(match.group())
        if kept:
            yield match.start(), kept
            position = match.start() + len(kept)
        else:
            position = match.start() + 1


def group_prefixes(candidate: str, separators: str, min_digits: int) -> Iterator[str]:
    """The candidate, then it without its last group, and so on: a greedy match may have taken
    an unrelated number written after the real one ("4111 1111 1111 1111 123")."""
    yield candidate
    cut = len(candidate)
    while True:
        cut = max(candidate.rfind(sep, 0, cut) for sep in separators)
        if cut <= 0 or len(re.sub(r"[^0-9A-Za-z]", "", candidate[:cut])) < min_digits:
            return
        yield candidate[:cut]
