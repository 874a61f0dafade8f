"""The gate a trained candidate passes before it answers: measured against the incumbent (the
task's active version) on the same held-out rows, it must be better by a margin and no worse on
the guards. Both run locally (no escalation, no call log), one forward pass per item as served.

Guards: out-of-scope recall (when the data has an out-of-scope label) must not drop; the median
latency per item must stay within `max_latency_ratio` of the incumbent's.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from workhorse.engine import Evaluator
from workhorse.evals.datasets import Dataset
from workhorse.evals.metrics import classification_report
from workhorse.pipeline import build_pipeline
from workhorse.tasks.spec import TaskSpec

LATENCY_SAMPLE = 32  # items timed one at a time for the median latency


@dataclass(frozen=True)
class Measured:
    version: int
    accuracy: float
    macro_f1: float
    ece: float
    oos_recall: float | None
    p50_ms: float


@dataclass
class GateReport:
    candidate: Measured
    incumbent: Measured | None
    margin: float
    max_latency_ratio: float
    rows: int
    passed: bool = False
    reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure(spec: TaskSpec, directory: Path | None, evaluator: Evaluator, holdout: Dataset,
            progress: Callable[[int], None] | None = None) -> Measured:
    """Accuracy, macro-F1, ECE and out-of-scope recall on `holdout`, and the median latency of one
    item. `progress` hears of each batch of items answered."""
    pipeline = build_pipeline(spec, directory, evaluator, escalate=False)
    try:
        texts = [ex.text for ex in holdout.examples]
        answers = []
        for start in range(0, len(texts), 64):
            answers += pipeline.run(texts[start : start + 64])
            if progress:
                progress(len(texts[start : start + 64]))
        oos = holdout.oos_label
        labels = [spec.in_dataset_terms(a.answer, oos) for a in answers]
        report = classification_report([ex.label for ex in holdout.examples], labels, [a.confidence for a in answers],
                                       oos_label=oos)
        timings = []
        for text in texts[:LATENCY_SAMPLE]:
            started = time.perf_counter()
            pipeline.run([text])
            timings.append(1000 * (time.perf_counter() - started))
    finally:
        pipeline.close()
    return Measured(spec.version, report["accuracy"], report["macro_f1"], report["ece"], report.get("oos_recall"),
                    statistics.median(timings))


def decide(candidate: Measured, incumbent: Measured | None, *, rows: int, margin: float,
           max_latency_ratio: float) -> GateReport:
    """Pass or fail, with every reason."""
    report = GateReport(candidate, incumbent, margin, max_latency_ratio, rows)
    if incumbent is None:
        report.passed, report.reasons = True, ["no incumbent to beat"]
        return report
    if candidate.accuracy < incumbent.accuracy + margin:
        report.reasons.append(f"accuracy {candidate.accuracy:.4f} is not above the incumbent's {incumbent.accuracy:.4f} "
                              f"by {margin:.4f}")
    if incumbent.oos_recall is not None and (candidate.oos_recall or 0.0) < incumbent.oos_recall:
        report.reasons.append(f"out-of-scope recall fell from {incumbent.oos_recall:.3f} to {candidate.oos_recall:.3f}")
    if candidate.p50_ms > max_latency_ratio * incumbent.p50_ms:
        report.reasons.append(f"median latency {candidate.p50_ms:.1f} ms is over {max_latency_ratio}× the incumbent's "
                              f"{incumbent.p50_ms:.1f} ms")
    report.passed = not report.reasons
    if report.passed:
        report.reasons.append(f"accuracy {candidate.accuracy:.4f} against {incumbent.accuracy:.4f}; guards held")
    return report
