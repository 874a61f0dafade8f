"""Building a task's dataset from its logged calls and labelled data (`workhorse dataset build`).

The calls stream from the log, each becomes at most one candidate (see `candidates`), candidates
of one normalised text merge into one row (see `merge`), and each row goes to the split its text
hashes to (see `split`). Everything dropped on the way is counted by reason, so an empty or small
dataset says which filter removed what.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from workhorse.calllog import CallLog
from workhorse.errors import WorkhorseError
from workhorse.evals.datasets import load
from workhorse.flywheel.answers import AnswerRules, Unusable
from workhorse.flywheel.candidates import SOURCES, Candidate, Selection, from_call, from_example
from workhorse.flywheel.merge import Conflict, merge
from workhorse.flywheel.output import write_version
from workhorse.flywheel.split import SPLITS, SplitPercents
from workhorse.tasks.spec import TaskSpec

CONFLICTS_SHOWN = 20  # in the manifest and the printed report; conflicts.jsonl has them all
CONFLICTS_FILE = "conflicts.jsonl"


@dataclass(frozen=True)
class BuildOptions:
    selection: Selection = Selection()
    percents: SplitPercents = SplitPercents()
    since: float | None = None  # unix time: only calls from then on
    data: tuple[str, ...] = ()  # labelled files or dataset specs (`--data`)


@dataclass(frozen=True)
class Built:
    directory: Path  # the version folder written
    manifest: dict[str, Any]


def build_dataset(spec: TaskSpec, output: Path, options: BuildOptions, call_log: CallLog | None = None) -> Built:
    """Build the dataset of `spec` from `call_log` (when given) and `options.data`, and write it
    as the next version under `output`. WorkhorseError when no row is left."""
    rules = AnswerRules.of(spec)
    read: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    offered: Counter[str] = Counter()

    def candidates() -> Iterator[Candidate]:
        order = 0
        if call_log is not None:
            for call in call_log.iterate(task=spec.name, since=options.since):
                read["calls"] += 1
                order += 1
                yield from _kept(from_call(call, rules, options.selection, order))
        for data_spec in options.data:
            for example in load(data_spec).examples:
                read["data"] += 1
                order += 1
                yield from _kept(from_example(example, rules, order))

    def _kept(found: Candidate | Unusable) -> Iterator[Candidate]:
        if isinstance(found, Unusable):
            skipped[found.reason] += 1
        else:
            offered[found.source] += 1
            yield found

    merged = merge(candidates())
    if not merged.rows:
        raise _empty(spec, options, read, skipped)
    files: dict[str, list[dict[str, Any]]] = {f"{split}.jsonl": [] for split in SPLITS}
    splits: Counter[str] = Counter()
    labels: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for key, row in merged.rows.items():
        split = options.percents.split_of(key)
        splits[split] += 1
        files[f"{split}.jsonl"].append(_row(row, spec.kind))
        if spec.kind == "classify":
            for label in row.answer if isinstance(row.answer, list) else [row.answer]:
                labels[label][split] += 1
    conflicts = [_conflict(c) for c in merged.conflicts]
    manifest = {
        "task": spec.name,
        "kind": spec.kind,
        "task_versions": sorted({r.task_version for r in merged.rows.values() if r.task_version is not None}),
        "created": _iso(time.time()),
        "options": {
            "from_log": call_log is not None,
            "call_log": str(call_log.path) if call_log is not None else None,
            "since": _iso(options.since),
            "sources": [s for s in SOURCES if s in options.selection.sources],
            "min_confidence": options.selection.min_confidence,
            "data": list(options.data),
            "test_percent": options.percents.test,
            "validation_percent": options.percents.validation,
        },
        "counts": {
            "rows": len(merged.rows),
            "splits": {split: splits[split] for split in SPLITS},
            "sources": _by_precedence(Counter(r.source for r in merged.rows.values())),
            "labels": {label: {split: n[split] for split in SPLITS} for label, n in sorted(labels.items())},
            "read": {"calls": read["calls"], "data": read["data"]},
            "candidates": _by_precedence(offered),
            "skipped": dict(skipped.most_common()),
            "duplicates": merged.duplicates,
            "overridden": merged.overridden,
            "conflicts": len(merged.conflicts),
        },
        "conflicts": conflicts[:CONFLICTS_SHOWN],
    }
    directory, written = write_version(output, {**files, CONFLICTS_FILE: conflicts}, manifest)
    return Built(directory, written)


def _row(row: Candidate, kind: str) -> dict[str, Any]:
    """A JSONL row as `workhorse fit` and `eval` read it (`text` with `label`, `labels` or `fields`), with its provenance."""
    out: dict[str, Any] = {"text": row.text}
    if kind == "classify":
        out["labels" if isinstance(row.answer, list) else "label"] = row.answer
    else:
        out["answer"] = row.answer
        if isinstance(row.answer, dict):
            out["fields"] = row.answer  # the gold answer `workhorse eval` compares an extract or convert answer with
    return out | {"source": row.source, "call_id": row.call_id, "confidence": row.confidence,
                  "task_version": row.task_version, "created": _iso(row.created)}


def _conflict(conflict: Conflict) -> dict[str, Any]:
    return {"text": conflict.text, "source": conflict.source,
            "answers": [{"answer": c.answer, "call_id": c.call_id, "created": _iso(c.created)} for c in conflict.answers]}


def _by_precedence(counts: Counter[str]) -> dict[str, int]:
    return {source: counts[source] for source in SOURCES if counts[source]}


def _iso(moment: float | None) -> str | None:
    return None if moment is None else datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds")


def _empty(spec: TaskSpec, options: BuildOptions, read: Counter[str], skipped: Counter[str]) -> WorkhorseError:
    """No row left: say what was read and which filter dropped how much."""
    since = f" since {_iso(options.since)}" if options.since is not None else ""
    if not sum(read.values()):
        return WorkhorseError(f"no calls of task {spec.name} in the call log{since}, and no --data",
                              "serve or run the task to log calls, widen --since, or add labelled rows with --data FILE")
    what = ", ".join(f"{n} {name}" for name, n in read.items() if n)
    dropped = "; ".join(f"{reason}: {n}" for reason, n in skipped.most_common())
    return WorkhorseError(
        f"no usable rows for task {spec.name}: read {what}{since}; dropped {dropped}",
        f"lower --min-confidence (now {options.selection.min_confidence}), widen --sources or --since, "
        "record feedback on calls, or add labelled rows with --data FILE",
    )
