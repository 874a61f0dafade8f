"""What the pipeline answers for one item: the final answer, where it came from, and its call."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Source = Literal["local", "upstream", "fallback"]


@dataclass
class Answer:
    answer: Any
    confidence: float | None  # the small model's; None for an upstream or fallback answer
    source: Source
    task: str
    version: int
    details: dict[str, Any] = field(default_factory=dict)  # the kind's (probabilities, validity) and the escalation's flags
    escalation_reason: str | None = None  # why the policy sent it upstream (also when that failed or was blocked)
    call_id: int | None = None  # its row in the call log, once committed
    latency_ms: float | None = None  # its share of the batch's engine time, plus its escalation's wait

    @classmethod
    def from_call(cls, call: dict[str, Any]) -> Answer:
        """The answer a logged call gave (its kind's details, such as probabilities, are not logged)."""
        confidence = call["confidence"] if call["source"] == "local" else None
        return cls(call["final_answer"], confidence, call["source"], call["task"], call["task_version"],
                   escalation_reason=call["escalation_reason"], call_id=call["id"], latency_ms=call["latency_ms"])

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape of an answer, as `workhorse run` writes it and the server returns it."""
        out: dict[str, Any] = {"answer": self.answer, "confidence": self.confidence, **self.details, "source": self.source}
        if self.escalation_reason is not None:
            out["escalation_reason"] = self.escalation_reason
        if self.call_id is not None:
            out["call_id"] = self.call_id
        if self.latency_ms is not None:
            out["latency_ms"] = round(self.latency_ms, 2)
        return out | {"task": self.task, "version": self.version}
