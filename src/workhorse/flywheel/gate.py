"""The gate a trained candidate passes before it answers: measured against the incumbent (the
task's active version) on the same held-out rows, it must be better by a margin and no worse on
the guards. Both run locally (no escalation, no call log), one forward pass per item as served.

The main measure is accuracy for classify tasks, field exact-match for extract and convert tasks
(as `workhorse eval` reports it; a converted value counts as one field). Guards: for classify,
out-of-scope recall (when the data has an out-of-scope label) must not drop; for extract and
convert, every answer must be valid (the grammar's promise: an answer cut off at its token limit
is not); the median latency per item must stay within `max_latency_ratio` of the incumbent's.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from workhorse.engine import Evaluator
from workhorse.errors import TaskError
from workhorse.evals.datasets import Dataset
from workhorse.evals.metrics import classification_report, extraction_report
from workhorse.pipeline import Answer, build_pipeline
from workhorse.tasks.spec import TaskSpec

LATENCY_SAMPLE = 32  # items timed one at a time for the median latency


@dataclass(frozen=True)
class Measured:
    """A classify version on the held-out rows."""

    version: int
    accuracy: float
    macro_f1: float
    ece: float
    oos_recall: float | None
    p50_ms: float

    metric: ClassVar[str] = "accuracy"

    @property
    def score(self) -> float:
        return self.accuracy

    def failures(self, incumbent: Measured | None) -> list[str]:
        if incumbent is not None and incumbent.oos_recall is not None and (self.oos_recall or 0.0) < incumbent.oos_recall:
            return [f"out-of-scope recall fell from {incumbent.oos_recall:.3f} to {self.oos_recall:.3f}"]
        return []


@dataclass(frozen=True)
class MeasuredAnswers:
    """An extract or convert version on the held-out rows."""

    version: int
    field_exact_match: float
    valid_rate: float  # answers valid against the schema (or matching the pattern)
    p50_ms: float

    metric: ClassVar[str] = "field exact-match"

    @property
    def score(self) -> float:
        return self.field_exact_match

    def failures(self, incumbent: MeasuredAnswers | None) -> list[str]:
        if self.valid_rate < 1.0:
            return [f"{100 * (1 - self.valid_rate):.1f} % of its answers are not valid (cut off at the token limit, say)"]
        return []


@dataclass
class GateReport:
    candidate: Measured | MeasuredAnswers
    incumbent: Measured | MeasuredAnswers | None
    margin: float
    max_latency_ratio: float
    rows: int
    passed: bool = False
    reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure(spec: TaskSpec, directory: Path | None, evaluator: Evaluator, holdout: Dataset,
            progress: Callable[[int], None] | None = None) -> Measured | MeasuredAnswers:
    """The task's main measure and guards on `holdout` (see the module's docstring), and the median
    latency of one item. `progress` hears of each batch of items answered."""
    score = _SCORES.get(spec.kind)
    if score is None:
        raise TaskError(f"{spec.kind} tasks have no gate", "train classify, extract or convert tasks")
    pipeline = build_pipeline(spec, directory, evaluator, escalate=False)
    try:
        texts = [ex.text for ex in holdout.examples]
        answers = []
        for start in range(0, len(texts), 64):
            answers += pipeline.run(texts[start : start + 64])
            if progress:
                progress(len(texts[start : start + 64]))
        timings = []
        for text in texts[:LATENCY_SAMPLE]:
            started = time.perf_counter()
            pipeline.run([text])
            timings.append(1000 * (time.perf_counter() - started))
    finally:
        pipeline.close()
    return score(spec, holdout, answers, statistics.median(timings))


def paired_latencies(sides: Sequence[tuple[TaskSpec, Path | None, Evaluator]], holdout: Dataset) -> list[float]:
    """The median latency of one item for each side, the sides timed in turn item by item: a shared
    machine's load changes over minutes, and timing each side in its own stretch let that change
    decide the latency guard (a candidate measured while other work ran failed at 1.5× the
    incumbent's median for nothing of its own)."""
    pipelines = [build_pipeline(spec, directory, evaluator, escalate=False) for spec, directory, evaluator in sides]
    timings: list[list[float]] = [[] for _ in sides]
    try:
        for text in [ex.text for ex in holdout.examples[:LATENCY_SAMPLE]]:
            for pipeline, times in zip(pipelines, timings, strict=True):
                started = time.perf_counter()
                pipeline.run([text])
                times.append(1000 * (time.perf_counter() - started))
    finally:
        for pipeline in pipelines:
            pipeline.close()
    return [statistics.median(times) for times in timings]


def _classified(spec: TaskSpec, holdout: Dataset, answers: list[Answer], p50_ms: float) -> Measured:
    oos = holdout.oos_label
    labels = [spec.in_dataset_terms(a.answer, oos) for a in answers]
    report = classification_report([ex.label for ex in holdout.examples], labels, [a.confidence for a in answers],
                                   oos_label=oos)
    return Measured(spec.version, report["accuracy"], report["macro_f1"], report["ece"], report.get("oos_recall"), p50_ms)


def _answered(spec: TaskSpec, holdout: Dataset, answers: list[Answer], p50_ms: float) -> MeasuredAnswers:
    gold = [ex.target for ex in holdout.examples]
    if any(target is None for target in gold):
        raise TaskError(f"{sum(target is None for target in gold)} held-out rows have no answer to compare with",
                        'give each held-out row its answer: "fields" (an object) or "answer"')
    predicted = [a.answer if a.details.get("valid") else None for a in answers]
    # A converted value is compared as the one field of an object, normalised as fields are.
    gold_objects = [g if isinstance(g, dict) else {"value": g} for g in gold]
    predicted_objects = [p if isinstance(g, dict) or p is None else {"value": p} for g, p in zip(gold, predicted, strict=True)]
    report = extraction_report(gold_objects, predicted_objects)
    valid = sum(bool(a.details.get("valid")) for a in answers) / len(answers)
    return MeasuredAnswers(spec.version, report["field_exact_match"], valid, p50_ms)


_SCORES: dict[str, Callable[[TaskSpec, Dataset, list[Answer], float], Measured | MeasuredAnswers]] = {
    "classify": _classified,
    "extract": _answered,
    "convert": _answered,
}


def decide(candidate: Measured | MeasuredAnswers, incumbent: Measured | MeasuredAnswers | None, *, rows: int, margin: float,
           max_latency_ratio: float) -> GateReport:
    """Pass or fail, with every reason."""
    report = GateReport(candidate, incumbent, margin, max_latency_ratio, rows)
    report.reasons = candidate.failures(incumbent)  # type: ignore[arg-type]
    if incumbent is None:
        report.passed = not report.reasons
        report.reasons = report.reasons or ["no incumbent to beat"]
        return report
    metric = candidate.metric
    if candidate.score < incumbent.score + margin:
        report.reasons.insert(0, f"{metric} {candidate.score:.4f} is not above the incumbent's {incumbent.score:.4f} by {margin:.4f}")
    if candidate.p50_ms > max_latency_ratio * incumbent.p50_ms:
        report.reasons.append(f"median latency {candidate.p50_ms:.1f} ms is over {max_latency_ratio}× the incumbent's "
                              f"{incumbent.p50_ms:.1f} ms")
    report.passed = not report.reasons
    if report.passed:
        report.reasons.append(f"{metric} {candidate.score:.4f} against {incumbent.score:.4f}; guards held")
    return report
