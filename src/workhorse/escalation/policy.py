"""When does an item go to the large model? The task's escalation options decide, per answer."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from workhorse.tasks.answer import LocalAnswer
from workhorse.tasks.spec import EscalationOptions, TaskSpec


def escalation_reason(spec: TaskSpec, text: str, answer: LocalAnswer) -> str | None:
    """Why this answer should be escalated (the first rule that fires), or None."""
    options: EscalationOptions = spec.escalation
    if options.mode == "never":
        return None
    if options.mode == "always":
        return "always"
    if options.on_invalid and answer.details.get("valid") is False:
        return "invalid_output"
    if options.max_input_chars is not None and len(text) > options.max_input_chars:
        return "long_input"
    if options.labels and answer.answer in options.labels:
        return "label"
    out_of_scope = spec.classify.out_of_scope
    if options.out_of_scope and out_of_scope is not None and answer.answer == out_of_scope.label:
        return "out_of_scope"
    if answer.confidence is not None and answer.confidence < options.threshold:
        return "low_confidence"
    return None


def threshold_for_rate(confidences: Sequence[float], rate: float) -> float:
    """The confidence threshold below which `rate` of these (dev-set) answers fall."""
    if not 0 < rate < 1:
        raise ValueError("the target escalation rate must be between 0 and 1")
    values = np.sort(np.asarray(confidences, dtype=np.float64))
    # Escalate the k least confident: the threshold sits just above the k-th value.
    k = int(round(rate * len(values)))
    if k == 0:
        return 0.0
    return float(np.nextafter(values[k - 1], np.inf)) if k < len(values) else 1.0
