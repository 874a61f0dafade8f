"""The one place where an answer is made: the task's kind answers locally, the escalation policy
picks the items the large model should see, they leave redacted and come back restored, and every
call is recorded in the call log before anyone sees its answer.

    pipeline = build_pipeline(spec, directory, engine, call_log=log)
    answers = pipeline.run(texts)     # each with source, escalation_reason, call_id, version

The server's task routes, `workhorse run`, `eval` and `tasks calibrate` all answer through it.
Escalations run on a few threads (they wait on the network, not the CPU). With a call log, `run`
returns once every call is committed, so an answer a caller saw survives a crash.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from workhorse.calllog import CallLog, CallRecord
from workhorse.calllog.prices import PriceTable
from workhorse.calllog.store import CALL_LOG_TIMEOUT_S, wait_committed
from workhorse.escalation.escalate import Escalation, escalate_one
from workhorse.escalation.policy import escalation_reason
from workhorse.escalation.request import messages_for
from workhorse.escalation.upstream import UpstreamClient
from workhorse.pipeline.answer import Answer
from workhorse.pipeline.tally import Tally
from workhorse.tasks.answer import LocalAnswer
from workhorse.tasks.kinds import LocalTask
from workhorse.tasks.spec import TaskSpec

ESCALATION_THREADS = 8


class Pipeline:
    def __init__(
        self,
        local: LocalTask,
        *,
        model: str,
        upstream: UpstreamClient | None = None,
        call_log: CallLog | None = None,
        prices: PriceTable | None = None,
        count_tokens: Callable[[str], int] | None = None,
    ) -> None:
        self.local = local
        self.spec: TaskSpec = local.spec
        self.model = model  # the engine's model name, as logged
        self.upstream = upstream  # None: nothing is escalated
        self.call_log = call_log  # None: nothing is recorded
        self.prices = prices or PriceTable()
        # Counts the tokens of the upstream request a call would make (the local tokenizer stands
        # in for the upstream's), so that the bill can price sending everything upstream.
        self.count_tokens = count_tokens
        self._system_tokens: int | None = None
        self.tally = Tally(self.prices)
        self._pool = ThreadPoolExecutor(ESCALATION_THREADS, thread_name_prefix="escalate") if upstream else None

    def with_upstream(self, upstream: UpstreamClient) -> Pipeline:
        """This pipeline's task and prices with another upstream, logging nothing (for `eval`)."""
        return Pipeline(self.local, model=self.model, upstream=upstream, prices=self.prices, count_tokens=self.count_tokens)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        if self.upstream is not None:
            self.upstream.close()

    # -- answering ------------------------------------------------------------------------------
    def run(self, texts: Sequence[str], *, refs: Sequence[str] | None = None, arrived: float | None = None) -> list[Answer]:
        """One answer per text, in order: local, escalated where the policy says, logged (with the
        caller's `refs` for the items, if given: see `CallLog.find_refs`). `arrived`: when the
        earliest item arrived (`time.monotonic()`; default now) — the escalation budget counts from
        there, so time spent queueing and on the local answer is spent from it."""
        started = time.perf_counter()
        arrived = time.monotonic() if arrived is None else arrived
        deadline = arrived + self.upstream.options.timeout_s if self.upstream is not None else None
        local = self.local.run(texts)
        local_s = (time.perf_counter() - started) / max(len(texts), 1)  # engine time, shared out per item
        pending: dict[int, Any] = {}
        if self._pool is not None:
            for i, (text, answer) in enumerate(zip(texts, local, strict=True)):
                reason = escalation_reason(self.spec, text, answer)
                if reason is not None:
                    pending[i] = self._pool.submit(self._escalate, text, reason, deadline)
        finals, records = [], []
        for i, (text, answer) in enumerate(zip(texts, local, strict=True)):
            escalation, waited_s = pending[i].result() if i in pending else (None, 0.0)
            final = self._final(answer, escalation, latency_ms=1000 * (local_s + waited_s))
            finals.append(final)
            self._count(final, escalation, local_s)
            if self.call_log is not None:
                records.append(self._record(text, answer, final, escalation, local_s, refs[i] if refs else None))
        return self._logged(finals, records)

    def run_once(self, texts: Sequence[str], refs: Sequence[str]) -> tuple[list[Answer], int]:
        """`run` for items a batch job names (`refs`), answering from the call log those it already
        logged (a job resumed after a crash between the log's commit and its output's write, or a
        batch Ray retried after its actor died): no item is answered or logged twice. Returns the
        answers in order and how many came from the log."""
        logged = self.call_log.find_refs(list(refs)) if self.call_log is not None else {}
        fresh = [i for i, ref in enumerate(refs) if ref not in logged]
        ran = self.run([texts[i] for i in fresh], refs=[refs[i] for i in fresh]) if fresh else []
        answered = dict(zip(fresh, ran, strict=True))
        answers = [answered[i] if i in answered else Answer.from_call(logged[ref]) for i, ref in enumerate(refs)]
        return answers, len(refs) - len(fresh)

    def fallback(self, texts: Sequence[str], *, waited_ms: float) -> list[Answer]:
        """The task's fallback answer for items whose deadline passed before the model answered,
        logged with source `fallback` (the local answer, if it comes later, is not used)."""
        value = self.spec.serve.fallback
        finals, records = [], []
        for text in texts:
            final = Answer(value, None, "fallback", self.spec.name, self.spec.version, {"fallback": True},
                           latency_ms=waited_ms)
            finals.append(final)
            self._count(final, None, 0.0)
            if self.call_log is not None:
                records.append(CallRecord(task=self.spec.name, task_version=self.spec.version, model=self.model,
                                          input=text, source="fallback", latency_ms=waited_ms, final_answer=value,
                                          upstream_prompt_estimate=self._upstream_tokens(text)))
        return self._logged(finals, records)

    def ask_upstream(self, texts: Sequence[str], *, reason: str) -> list[Escalation]:
        """The upstream's answers for these items, whatever the policy says (not logged): for
        measuring an upstream against labelled data (`eval --escalate`)."""
        if self._pool is None:
            raise ValueError("this pipeline has no upstream: build it with escalate=True and an upstream")
        return [escalation for escalation, _ in self._pool.map(lambda text: self._escalate(text, reason), texts)]

    # -- parts ---------------------------------------------------------------------------------
    def _escalate(self, text: str, reason: str, deadline: float | None = None) -> tuple[Escalation, float]:
        assert self.upstream is not None
        started = time.perf_counter()
        escalation = escalate_one(self.spec, self.upstream, self.prices, text, reason, deadline=deadline)
        return escalation, time.perf_counter() - started

    def _final(self, local: LocalAnswer, escalation: Escalation | None, *, latency_ms: float) -> Answer:
        spec = self.spec
        details = dict(local.details)
        if escalation is None:
            return Answer(local.answer, local.confidence, "local", spec.name, spec.version, details, latency_ms=latency_ms)
        if escalation.blocked:
            details["escalation_blocked"] = "local_only"
        elif escalation.failed:
            details["escalation_failed"] = True
        else:
            return Answer(escalation.answer, None, "upstream", spec.name, spec.version,
                          details | {"local_answer": local.answer}, escalation.reason, latency_ms=latency_ms)
        return Answer(local.answer, local.confidence, "local", spec.name, spec.version, details, escalation.reason,
                      latency_ms=latency_ms)

    def _record(self, text: str, local: LocalAnswer, final: Answer, escalation: Escalation | None,
                local_s: float, ref: str | None) -> CallRecord:
        escalated = escalation is not None and not escalation.blocked
        return CallRecord(
            task=self.spec.name,
            task_version=self.spec.version,
            model=self.model,
            input=text,
            output=local.answer,
            confidence=local.confidence,
            details=local.details or None,
            latency_ms=final.latency_ms,
            local_cpu_s=local_s,
            prompt_tokens=local.prompt_tokens,
            completion_tokens=local.completion_tokens,
            escalated=escalated,
            escalation_reason=escalation.reason if escalation else None,
            escalation_failed=bool(escalation and escalation.failed),
            upstream_model=self.upstream.options.model if escalated and self.upstream else None,
            upstream_request=escalation.request if escalation else None,
            upstream_answer=escalation.answer if escalation and not escalation.failed else None,
            upstream_prompt_tokens=escalation.prompt_tokens if escalation else None,
            upstream_completion_tokens=escalation.completion_tokens if escalation else None,
            upstream_cost=escalation.cost if escalation else None,
            redactions=escalation.redactions if escalation else None,
            upstream_prompt_estimate=self._upstream_tokens(text),
            final_answer=final.answer,
            source=final.source,
            request_ref=ref,
        )

    def _count(self, final: Answer, escalation: Escalation | None, local_s: float) -> None:
        self.tally.add(source=final.source, escalated=escalation is not None and not escalation.blocked,
                       failed=bool(escalation and escalation.failed), blocked=bool(escalation and escalation.blocked),
                       local_cpu_s=local_s, upstream_cost=escalation.cost if escalation else None)

    def _logged(self, finals: list[Answer], records: list[CallRecord]) -> list[Answer]:
        if self.call_log is None:
            return finals
        acknowledgements = [self.call_log.record(record) for record in records]
        for final, acknowledgement in zip(finals, acknowledgements, strict=True):
            # committed: the call is on disk (CallLogError, a 503, after CALL_LOG_TIMEOUT_S)
            final.call_id = wait_committed(acknowledgement, CALL_LOG_TIMEOUT_S)
        return finals

    def _upstream_tokens(self, text: str) -> int | None:
        """The upstream request's tokens: the task's system message (the same for every call,
        counted once) and the item."""
        if self.count_tokens is None:
            return None
        if self._system_tokens is None:
            [system, _] = messages_for(self.spec, "")
            self._system_tokens = self.count_tokens(system["content"])
        return self._system_tokens + self.count_tokens(text)
