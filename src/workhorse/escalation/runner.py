"""The small model answers; what it is unsure of goes to the large model with secrets removed;
every call is logged.

    runner = EscalatingRunner(spec, TaskRunner(spec, directory, engine), upstream=client, log=call_log)
    answers = runner.run(texts)   # each answer's details say where it came from

Escalations run in parallel (a few threads: they wait on the network, not the CPU). When the
upstream fails, the small model's answer stands, flagged `escalation_failed`. With a call log,
`run` returns once every call is committed to it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from workhorse.calllog import CallLog, CallRecord
from workhorse.escalation.ledger import PriceTable
from workhorse.escalation.policy import escalation_reason
from workhorse.escalation.request import answer_schema, messages_for, task_answer
from workhorse.escalation.upstream import UpstreamClient, UpstreamError
from workhorse.privacy import Redactor
from workhorse.tasks.runner import Answer, TaskRunner
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


class EscalatingRunner:
    def __init__(
        self,
        spec: TaskSpec,
        runner: TaskRunner,
        *,
        upstream: UpstreamClient | None,
        log: CallLog | None = None,
        prices: PriceTable | None = None,
        parallel: int = 8,
        count_tokens: Callable[[str], int] | None = None,
    ) -> None:
        self.spec = spec
        self.runner = runner
        self.upstream = upstream
        self.log = log
        self.prices = prices or PriceTable()
        # Counts tokens of the upstream request a call would make (the local tokenizer stands in
        # for the upstream's), so the log can price sending everything upstream.
        self.count_tokens = count_tokens
        self._system_tokens: int | None = None
        self._pool = ThreadPoolExecutor(parallel, thread_name_prefix="escalate")

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def run(self, texts: Sequence[str]) -> list[Answer]:
        started = time.perf_counter()
        local = self.runner.run(texts)
        local_seconds = (time.perf_counter() - started) / max(len(texts), 1)  # engine time, shared out per item
        reasons = [escalation_reason(self.spec, text, answer) for text, answer in zip(texts, local, strict=True)]
        pending = {
            i: self._pool.submit(self._escalate, texts[i], reason)
            for i, reason in enumerate(reasons)
            if reason is not None and self.upstream is not None
        }
        escalations = {i: future.result() for i, future in pending.items()}
        answers, acknowledgements = [], []
        for i, (text, answer) in enumerate(zip(texts, local, strict=True)):
            escalation = escalations.get(i)
            final = self._final(answer, escalation)
            answers.append(final)
            if self.log is not None:
                acknowledgements.append(self.log.record(self._record(text, answer, final, escalation, local_seconds)))
        if self.log is not None:
            for acknowledgement, answer in zip(acknowledgements, answers, strict=True):
                answer.details["call_id"] = acknowledgement.result()  # committed: the call is on disk
        return answers

    def _escalate(self, text: str, reason: str) -> Escalation:
        assert self.upstream is not None
        return escalate_one(self.spec, self.upstream, self.prices, text, reason)

    def _upstream_tokens(self, text: str) -> int | None:
        """The upstream request's tokens: the task's system message (the same for every call,
        counted once) and the item."""
        if self.count_tokens is None:
            return None
        if self._system_tokens is None:
            [system, _] = messages_for(self.spec, "")
            self._system_tokens = self.count_tokens(system["content"])
        return self._system_tokens + self.count_tokens(text)

    @staticmethod
    def _final(local: Answer, escalation: Escalation | None) -> Answer:
        details = dict(local.details)
        if escalation is None:
            return Answer(local.answer, local.confidence, details | {"source": "local"})
        details |= {"escalation_reason": escalation.reason}
        if escalation.blocked:
            return Answer(local.answer, local.confidence, details | {"source": "local", "escalation_blocked": "local_only"})
        if escalation.failed:
            return Answer(local.answer, local.confidence, details | {"source": "local", "escalation_failed": True})
        return Answer(escalation.answer, None, details | {"source": "upstream", "local_answer": local.answer})

    def _record(self, text: str, local: Answer, final: Answer, escalation: Escalation | None, seconds: float) -> CallRecord:
        escalated = escalation is not None and not escalation.blocked
        return CallRecord(
            task=self.spec.name,
            task_version=self.spec.version,
            model=self.spec.model,
            input=text,
            output=local.answer,
            confidence=local.confidence,
            latency_ms=seconds * 1000,
            local_cpu_s=seconds,
            escalated=escalated,
            escalation_reason=escalation.reason if escalation else None,
            escalation_failed=bool(escalation and escalation.failed),
            upstream_model=self.upstream.settings.model if escalated and self.upstream else None,
            upstream_answer=escalation.answer if escalation and not escalation.failed else None,
            upstream_prompt_tokens=escalation.prompt_tokens if escalation else None,
            upstream_completion_tokens=escalation.completion_tokens if escalation else None,
            upstream_cost=escalation.cost if escalation else None,
            redactions=escalation.redactions if escalation else None,
            upstream_prompt_estimate=self._upstream_tokens(text),
            final_answer=final.answer,
            source=final.details["source"],
        )


def escalate_one(spec: TaskSpec, upstream: UpstreamClient, prices: PriceTable, text: str, reason: str) -> Escalation:
    """Ask the upstream about one item under the task's privacy policy; never raises for upstream failures."""
    if spec.escalation.privacy == "local_only":
        return Escalation(reason, blocked=True)
    redactor = Redactor(spec.escalation.privacy, task=spec.name)  # one per item: no mapping shared between items
    [redacted], _ = redactor.prepare([text])
    counts = redactor.counts
    try:
        reply = upstream.ask(messages_for(spec, redacted), answer_schema(spec))
    except UpstreamError:
        return Escalation(reason, failed=True, redactions=counts)
    value = redactor.restore_value(task_answer(spec, reply.value))
    cost = prices.upstream_cost(upstream.settings.model, reply.prompt_tokens, reply.completion_tokens)
    return Escalation(reason, value, prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens,
                      cost=cost, redactions=counts)

