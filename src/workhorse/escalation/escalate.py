"""Asking the large model about one item under the task's privacy policy: redact, ask, restore,
price. Never raises for an upstream failure: the caller keeps the small model's answer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from workhorse.calllog.prices import PriceTable
from workhorse.escalation.request import answer_schema, messages_for, task_answer
from workhorse.escalation.upstream import UpstreamClient, UpstreamError
from workhorse.privacy import Redactor
from workhorse.tasks.spec import TaskSpec


@dataclass
class Escalation:
    reason: str
    answer: Any = None
    failed: bool = False
    blocked: bool = False  # the task's privacy policy keeps the item local
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost: float | None = None
    redactions: dict[str, int] | None = None
    request: str | None = None  # the item as it was sent, after redaction


def escalate_one(spec: TaskSpec, upstream: UpstreamClient, prices: PriceTable, text: str, reason: str, *,
                 deadline: float | None = None) -> Escalation:
    """`deadline`: the `time.monotonic()` instant by which the item must be answered (see
    `UpstreamClient.ask`); None gives the upstream its whole budget from now."""
    if spec.escalation.privacy == "local_only":
        return Escalation(reason, blocked=True)
    redactor = Redactor(spec.escalation.privacy, task=spec.name)  # one per item: no mapping shared between items
    [redacted], _ = redactor.prepare([text])
    counts = redactor.counts
    try:
        reply = upstream.ask(messages_for(spec, redacted), answer_schema(spec), deadline=deadline)
    except UpstreamError:
        return Escalation(reason, failed=True, redactions=counts, request=redacted)
    value = redactor.restore_value(task_answer(spec, reply.value))
    cost = prices.upstream_cost(upstream.options.model, reply.prompt_tokens, reply.completion_tokens)
    return Escalation(reason, value, prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens,
                      cost=cost, redactions=counts, request=redacted)
