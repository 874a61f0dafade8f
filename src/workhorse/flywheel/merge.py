"""Merging the candidates of one text (by normalised text) into the one row a dataset keeps.

The highest-precedence source present decides (feedback > data > upstream > local); among its
candidates the newest answer wins. When that source's candidates disagree, the text is a
conflict: counted and listed, and kept with the newest answer (the latest word on it, e.g. a
correction of a correction). A lower source that disagrees with the kept answer is not a
conflict — being overruled is what precedence is for — and is counted as `overridden`.

Candidates are reduced as they stream in: memory grows with the distinct texts, not the calls.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from workhorse.flywheel.candidates import PRECEDENCE, Candidate
from workhorse.flywheel.split import normalise


def answer_key(answer: Any) -> str:
    """Answers compare by their canonical JSON (an object's key order does not matter)."""
    return json.dumps(answer, sort_keys=True, ensure_ascii=False)


@dataclass
class _Group:
    precedence: int  # of the best source seen for the text
    top: dict[str, Candidate] = field(default_factory=dict)  # at that precedence: the newest candidate of each answer
    top_count: Counter[str] = field(default_factory=Counter)  # at that precedence: the candidates of each answer
    lower: Counter[str] = field(default_factory=Counter)  # below it: the candidates of each answer

    @property
    def size(self) -> int:
        return self.top_count.total() + self.lower.total()

    def add(self, candidate: Candidate) -> None:
        rank = PRECEDENCE[candidate.source]
        key = answer_key(candidate.answer)
        if rank < self.precedence:
            self.lower[key] += 1
            return
        if rank > self.precedence:  # a better source: what was on top is now overruled
            self.lower.update(self.top_count)
            self.precedence, self.top, self.top_count = rank, {}, Counter()
        self.top_count[key] += 1
        known = self.top.get(key)
        if known is None or candidate.recency > known.recency:
            self.top[key] = candidate

    @property
    def kept(self) -> Candidate:
        return max(self.top.values(), key=lambda c: c.recency)


@dataclass(frozen=True)
class Conflict:
    text: str
    source: str
    answers: list[Candidate]  # the disagreeing answers, newest (the one kept) first


@dataclass(frozen=True)
class Merged:
    rows: dict[str, Candidate]  # normalised text → the row kept, in order of the text's first appearance
    conflicts: list[Conflict]
    duplicates: int  # candidates merged into another candidate's row
    overridden: int  # lower-precedence candidates whose answer differed from the one kept


def merge(candidates: Iterable[Candidate]) -> Merged:
    groups: dict[str, _Group] = {}
    for candidate in candidates:
        key = normalise(candidate.text)
        groups.setdefault(key, _Group(PRECEDENCE[candidate.source])).add(candidate)
    rows, conflicts, duplicates, overridden = {}, [], 0, 0
    for key, group in groups.items():
        kept = rows[key] = group.kept
        duplicates += group.size - 1
        overridden += sum(n for answer, n in group.lower.items() if answer != answer_key(kept.answer))
        if len(group.top) > 1:
            answers = sorted(group.top.values(), key=lambda c: c.recency, reverse=True)
            conflicts.append(Conflict(kept.text, kept.source, answers))
    return Merged(rows, conflicts, duplicates, overridden)
