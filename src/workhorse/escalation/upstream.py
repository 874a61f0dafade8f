"""The large model: any OpenAI-compatible chat endpoint, asked with `response_format` so its answer
fits the task's output type.

Every call is bounded by one time budget (`timeout_s`, covering retries, backoff and a response
that trickles in byte by byte), or by an earlier absolute deadline the caller passes (a served
request's budget counts from its arrival, so the time its local answer took is already spent);
transient failures (timeouts, connection errors, 429, 5xx, an answer that is not valid JSON for
the schema) are retried with exponential backoff; a circuit breaker stops calling a dead upstream.
Failing, the client raises `UpstreamError`; the caller keeps the small model's answer. Whatever
the upstream sends back, `ask` returns a well-formed answer or raises `UpstreamError`: the token
counts it reports are checked like the answer itself.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import jsonschema

from workhorse.errors import TaskSpecError, UpstreamError
from workhorse.escalation.breaker import CircuitBreaker
from workhorse.tasks.spec import UpstreamOptions

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})

# Far above any real call (context windows are at most a few million tokens), far below SQLite's
# 64-bit integers: a count beyond it is a broken upstream, and it must not reach the call log.
MAX_USAGE_TOKENS = 100_000_000
# One answer is a small JSON object; a body beyond this is a broken upstream, not worth the memory.
MAX_RESPONSE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class UpstreamAnswer:
    value: Any
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    attempts: int


class UpstreamClient:
    def __init__(
        self,
        options: UpstreamOptions,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        problem = options.transport_problem()  # again here: a `model_copy(update=…)` skipped validation
        if problem is not None:
            raise TaskSpecError(f"upstream {options.model}: {problem}", "fix the task's escalation.upstream")
        self.options = options  # a task's `escalation.upstream`
        self.breaker = CircuitBreaker(failures=options.breaker_failures, cooldown_s=options.breaker_cooldown_s)
        headers = {}
        key = os.environ.get(options.api_key_env) if options.api_key_env else None  # read here, never stored
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._http = httpx.Client(base_url=options.base_url.rstrip("/"), headers=headers, transport=transport)
        self._sleep = sleep

    def close(self) -> None:
        self._http.close()

    def ask(self, messages: list[dict[str, str]], schema: dict[str, Any], *, deadline: float | None = None) -> UpstreamAnswer:
        """The upstream's answer as JSON valid against `schema`, by `deadline` (a `time.monotonic()`
        instant; the budget `timeout_s` from now when None or later)."""
        started = time.monotonic()
        deadline = started + self.options.timeout_s if deadline is None else min(deadline, started + self.options.timeout_s)
        if deadline <= started:
            # Checked before the breaker: no time left is the caller's state, not the upstream's
            # failure, and it must not take the half-open probe.
            raise UpstreamError(f"no time left to ask upstream {self.options.model}", "the small model's answer is used")
        if not self.breaker.allow():
            raise UpstreamError(
                f"upstream {self.options.model} is failing: calls are paused for {self.options.breaker_cooldown_s:g} s",
                "the small model's answer is used meanwhile",
            )
        body = {
            "model": self.options.model,
            "messages": messages,
            "temperature": 0,
            "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}},
        }
        problem = "no attempt made"
        for attempt in range(1, self.options.retries + 2):
            try:
                answer = self._attempt(body, schema, deadline)
            except _Retryable as error:
                problem = str(error)
            except _Fatal as error:
                self.breaker.failure()
                raise UpstreamError(f"upstream {self.options.model}: {error}", "check the upstream settings") from None
            else:
                self.breaker.success()
                return UpstreamAnswer(answer[0], answer[1], answer[2], time.monotonic() - started, attempt)
            pause = self.options.backoff_s * 2 ** (attempt - 1)
            if time.monotonic() + pause >= deadline:
                break
            self._sleep(pause)
        self.breaker.failure()
        raise UpstreamError(f"upstream {self.options.model} failed: {problem}", "the small model's answer is used")

    def _attempt(self, body: dict[str, Any], schema: dict[str, Any], deadline: float) -> tuple[Any, int, int]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _Retryable("out of time")
        try:
            with self._http.stream("POST", "/chat/completions", json=body, timeout=remaining) as response:
                chunks, size = [], 0
                for chunk in response.iter_bytes():  # read by hand: a trickle must not outlast the budget
                    chunks.append(chunk)
                    size += len(chunk)
                    if time.monotonic() > deadline:
                        raise _Retryable("the response did not finish in time")
                    if size > MAX_RESPONSE_BYTES:
                        raise _Retryable(f"the response is over {MAX_RESPONSE_BYTES // 2**20} MiB")
                raw = b"".join(chunks)
        except httpx.TimeoutException:
            raise _Retryable("timed out") from None
        except httpx.RequestError as error:  # a transport failure, a body that does not decode, a redirect loop
            raise _Retryable(f"connection failed ({type(error).__name__})") from None
        if response.status_code in RETRYABLE_STATUS:
            raise _Retryable(f"HTTP {response.status_code}")
        if response.status_code >= 400:
            raise _Fatal(f"HTTP {response.status_code}: {raw[:300].decode(errors='replace')}")
        try:
            payload = json.loads(raw)
            content = payload["choices"][0]["message"]["content"]
            value = json.loads(content)
            jsonschema.validate(value, schema)
        except (ValueError, KeyError, IndexError, TypeError, RecursionError, jsonschema.ValidationError) as error:
            # RecursionError: JSON nested thousands deep, from a broken or hostile upstream
            raise _Retryable(f"malformed answer ({type(error).__name__})") from None
        usage = payload.get("usage")
        if not isinstance(usage, dict):
            usage = {}
        return value, token_count(usage.get("prompt_tokens")), token_count(usage.get("completion_tokens"))


def token_count(value: object) -> int:
    """A token count the upstream reported, or 0 (unknown) when it is not one: missing, not a
    whole number, negative, or beyond `MAX_USAGE_TOKENS`. A bad count costs the bill its precision,
    never the item its answer."""
    if isinstance(value, bool):  # bool is an int to Python, not a count to anyone
        return 0
    if isinstance(value, float) and value.is_integer():  # 30.0 is a count; inf and nan are not integers
        value = int(value)
    if isinstance(value, int) and 0 <= value <= MAX_USAGE_TOKENS:
        return value
    return 0


class _Retryable(Exception):
    pass


class _Fatal(Exception):
    pass
