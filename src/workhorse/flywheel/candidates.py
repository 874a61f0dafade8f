"""Candidates: one text with one answer, from a logged call or a row of labelled data, and the
source the answer came from. Several candidates of one text are merged later (see `merge`).

A call offers its answers in precedence order — its feedback, the large model's answer (for a
call answered upstream), the small model's own answer — and gives the first one whose source is
selected. Feedback decides on its own: when a call's correction is unusable the call is dropped
rather than trained on the answer the correction disputed. A small model's answer counts only at
or above the minimum confidence, and never when it abstained (the out-of-scope label: its
confidence is not confidence in a label). A fallback answer (the deadline passed before the model
answered) is never used, but a correction of such a call is: it is about the text, not the answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from workhorse.evals.datasets import Example
from workhorse.flywheel.answers import AnswerRules, Unusable

SOURCES = ("feedback", "data", "upstream", "local")  # highest precedence first
PRECEDENCE = {source: len(SOURCES) - rank for rank, source in enumerate(SOURCES)}


@dataclass(frozen=True)
class Candidate:
    text: str
    answer: Any  # classify: a label, or a list of labels (multi-label); extract, convert: the task's answer
    source: str  # one of SOURCES
    call_id: int | None = None  # None for labelled data
    confidence: float | None = None  # the small model's on the call, whatever the answer's source
    task_version: int | None = None
    created: float | None = None  # unix time the answer was given (the call, or its feedback); None for data
    order: int = 0  # position in the input: breaks ties between equal times (the later wins)

    @property
    def recency(self) -> tuple[float, int]:
        return (self.created if self.created is not None else 0.0, self.order)


@dataclass(frozen=True)
class Selection:
    """Which answers a build may use."""

    sources: frozenset[str] = frozenset(SOURCES)
    min_confidence: float = 0.9


def from_call(call: dict[str, Any], rules: AnswerRules, selection: Selection, order: int) -> Candidate | Unusable:
    offers = _offers(call, rules)
    for source, answer, created in offers:
        if source not in selection.sources:
            continue
        if source == "local":
            if call["confidence"] is None or call["confidence"] < selection.min_confidence:
                return Unusable("local answer below --min-confidence")
            if rules.abstain is not None and answer == rules.abstain:
                return Unusable("local abstention (out of scope)")
        checked = rules.check(answer)
        if isinstance(checked, Unusable):
            return Unusable(f"{source}: {checked.reason}")
        return Candidate(call["input"], checked, source, call["id"], call["confidence"], call["task_version"], created, order)
    if offers:
        return Unusable("source not in --sources")
    return Unusable("fallback answer" if call["source"] == "fallback" else "no answer")


def _offers(call: dict[str, Any], rules: AnswerRules) -> list[tuple[str, Any, float]]:
    """(source, answer, when given) for each answer the call has, highest precedence first."""
    offers = []
    if call["feedback"] is not None:
        offers.append(("feedback", rules.from_feedback(call["feedback"]), call["feedback_at"] or call["created_at"]))
    if call["source"] == "upstream":
        upstream = call["upstream_answer"] if call["upstream_answer"] is not None else call["final_answer"]
        offers.append(("upstream", upstream, call["created_at"]))
    if call["source"] != "fallback" and call["output"] is not None:
        offers.append(("local", call["output"], call["created_at"]))
    return offers


def from_example(example: Example, rules: AnswerRules, order: int) -> Candidate | Unusable:
    """A row of labelled data (`--data`): its label(s) for classify, its fields otherwise."""
    if rules.kind == "classify":
        answer: Any = list(example.labels) if example.labels else example.label
    else:
        answer = example.fields
    if answer is None:
        return Unusable("data: unlabelled row")
    checked = rules.check(answer)
    if isinstance(checked, Unusable):
        return Unusable(f"data: {checked.reason}")
    return Candidate(example.text, checked, "data", order=order)
