"""What counts as a usable answer for a task: its kind's shape, and for classify one of its labels.

Feedback is stored as the server takes it (`{"label": …}`, `{"labels": […]}`, `{"fields": {…}}`)
or as a caller gave it to `CallLog.feedback` (a bare label, or the whole answer object);
`from_feedback` reads either into the task's answer. Answers are checked against the task being
built (its latest version unless a task file is given): a correction the server could not check
(its task no longer served) or a label since removed is dropped here rather than trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from workhorse.errors import TaskError
from workhorse.tasks.spec import TaskSpec

KINDS = ("classify", "extract", "convert")
_ENVELOPE_EXTRAS = {"note"}  # keys the server's feedback carries beside the correction


@dataclass(frozen=True)
class Unusable:
    """Why an answer cannot be a training target (a key of the build's `skipped` counts)."""

    reason: str


@dataclass(frozen=True)
class AnswerRules:
    kind: str
    labels: frozenset[str] = frozenset()  # classify: the task's labels and its out-of-scope label
    multi_label: bool = False
    abstain: str | None = None  # classify: the out-of-scope label, which the small model answers when unsure

    @classmethod
    def of(cls, spec: TaskSpec) -> AnswerRules:
        if spec.kind not in KINDS:
            raise TaskError(f"task {spec.name} is a {spec.kind} task: it has no answers to train on",
                            f"build datasets for {', '.join(KINDS)} tasks")
        if spec.kind != "classify":
            return cls(spec.kind)
        abstain = spec.classify.out_of_scope.label if spec.classify.out_of_scope else None
        labels = frozenset(spec.label_names) | ({abstain} if abstain else set())
        return cls("classify", labels, spec.classify.multi_label, abstain)

    def from_feedback(self, value: Any) -> Any:
        """The answer a stored correction gives: unwrapped from the server's envelope when it has one."""
        if not isinstance(value, dict):
            return value
        wanted = ("label", "labels") if self.kind == "classify" else ("fields",)
        given = [key for key in wanted if key in value]
        if len(given) == 1 and set(value) - {given[0]} <= _ENVELOPE_EXTRAS:
            return value[given[0]]
        return value

    def check(self, answer: Any) -> Any:
        """The answer as a training target (a single-label task's one-element list becomes its
        label, a multi-label task's bare label a list), or why it cannot be one."""
        if answer is None:
            return Unusable("no answer")
        if self.kind == "extract":
            return answer if isinstance(answer, dict) else Unusable("answer not a JSON object")
        if self.kind == "convert":
            return answer
        labels = [answer] if isinstance(answer, str) else answer
        if not (isinstance(labels, list) and labels and all(isinstance(label, str) for label in labels)):
            return Unusable("answer not a label")
        if any(label not in self.labels for label in labels):
            return Unusable("label not in the task")
        if self.multi_label:
            return labels
        return labels[0] if len(labels) == 1 else Unusable("several labels for a single-label task")
