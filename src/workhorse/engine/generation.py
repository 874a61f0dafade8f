"""Batched generation with continuous batching: sequences join and leave between decode steps.

Every step decodes one token for each running sequence plus the prompts of sequences that just
joined, in one `llama_decode`, so 16 sequences cost little more per step than one. Tokens a
grammar forces (JSON keys and punctuation) join the sampled token in the same step, so a
schema's fixed parts cost no steps of their own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from workhorse.engine.engine import Engine, OutputSpec
from workhorse.engine.sampling import FastForwardConstraint, Sampler, SamplingParams, TokenConstraint
from workhorse.errors import ContextFullError, EngineBusyError, EngineError

FinishReason = Literal["stop", "length", "constraint"]


@dataclass
class GenerateRequest:
    tokens: Sequence[int]
    params: SamplingParams = field(default_factory=SamplingParams)
    prefix_len: int = 0  # tokens[:prefix_len] is served from a prefix snapshot when possible
    constraint: TokenConstraint | None = None
    # Called on the engine thread with each step's new output tokens (streaming); keep it cheap.
    on_tokens: Callable[[list[int]], None] | None = None


@dataclass
class GenerateResult:
    tokens: list[int]
    finish_reason: FinishReason
    n_prompt: int
    n_cached: int
    confidence: float | None = None  # geometric mean probability of chosen tokens (params.confidence)


@dataclass
class _Running:
    key: int
    request: GenerateRequest
    slot: int
    sampler: Sampler
    n_cached: int
    next_pos: int
    feed: list[int]  # tokens to decode at the next step (the prompt, then a sampled token and any forced ones)
    generated: list[int] = field(default_factory=list)


class GenerationBatch:
    """A set of sequences generating together on one engine (owned by the engine's thread)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._running: dict[int, _Running] = {}
        self._next_key = 0

    @property
    def running(self) -> int:
        return len(self._running)

    def can_admit(self, request: GenerateRequest) -> bool:
        need = len(request.tokens) + request.params.max_tokens
        reserved = sum(len(r.request.tokens) + r.request.params.max_tokens for r in self._running.values())
        room = self.engine.n_ctx - reserved - self.engine.prefix_cache.tokens
        return self.engine.free_slots > 0 and need <= room

    def check(self, request: GenerateRequest) -> None:
        """Raise for a request that could never run on this engine."""
        if self.engine.is_encoder:
            raise EngineError(f"{self.engine.model.name} is an encoder: it makes embeddings and cannot generate text",
                              "generate with a decoder model such as qwen2.5-coder-0.5b")
        n = len(request.tokens)
        if n == 0:
            raise EngineError("empty prompt", "send at least one token")
        if n + request.params.max_tokens > self.engine.n_ctx:
            raise ContextFullError(
                f"prompt of {n} tokens + max_tokens {request.params.max_tokens} exceed the context of {self.engine.n_ctx}",
                "shorten the prompt, lower max_tokens, or raise n_ctx",
            )

    def add(self, request: GenerateRequest) -> int:
        """Start a sequence; its prompt is decoded with the next step. Returns its key."""
        self.check(request)
        n = len(request.tokens)
        slot = self.engine.acquire_slot()
        if slot is None:
            raise EngineBusyError("all sequence slots are busy", "call can_admit() before add()")
        cached = 0
        if 0 < request.prefix_len < n:
            cached = self.engine.attach_prefix(request.tokens[: request.prefix_len], slot)
        key = self._next_key
        self._next_key += 1
        self._running[key] = _Running(
            key=key,
            request=request,
            slot=slot,
            sampler=Sampler(request.params, request.constraint),
            n_cached=cached,
            next_pos=cached,
            feed=list(request.tokens[cached:]),
        )
        forced = self._fast_forward(self._running[key])  # e.g. a schema's opening `{"name":"`
        self._running[key].feed += forced
        if forced and request.on_tokens is not None:
            request.on_tokens(forced)
        return key

    def step(self) -> dict[int, GenerateResult]:
        """Decode one step for every running sequence; return those that finished."""
        entries: list[tuple[int, int, int, bool]] = []
        outputs: list[OutputSpec] = []
        order: list[_Running] = []
        for run in self._running.values():
            for i, token in enumerate(run.feed):
                last = i == len(run.feed) - 1
                entries.append((token, run.next_pos + i, run.slot, last))
            outputs.append(OutputSpec(request=run.key, position=run.next_pos + len(run.feed) - 1, logits=True, hidden=False))
            order.append(run)
        if not entries:
            return {}
        finished: dict[int, GenerateResult] = {}

        def consume(index: int, logits, _hidden) -> None:
            run = order[index]
            run.next_pos += len(run.feed)
            n_before = len(run.generated)
            token = run.sampler.sample(logits)
            reason = self._finish_reason(run, token)
            if reason != "stop":
                run.generated.append(token)
            if reason is None:
                run.feed = [token] + self._fast_forward(run)
                reason = self._finish_after_forced(run)
            if run.request.on_tokens is not None and len(run.generated) > n_before:
                run.request.on_tokens(run.generated[n_before:])
            if reason is None:
                return
            finished[run.key] = GenerateResult(
                tokens=run.generated,
                finish_reason=reason,
                n_prompt=len(run.request.tokens),
                n_cached=run.n_cached,
                confidence=run.sampler.confidence,
            )

        self.engine.decode(entries, outputs, consume)
        for key in finished:
            self.engine.release_slot(self._running.pop(key).slot)
        return finished

    def _finish_reason(self, run: _Running, token: int) -> FinishReason | None:
        params = run.request.params
        if token in params.stop_tokens or (not params.ignore_eos and self.engine.model.is_eog(token)):
            return "stop"
        if run.sampler.constraint is not None and run.sampler.constraint.is_finished():
            return "constraint"
        if len(run.generated) + 1 >= params.max_tokens:
            return "length"
        return None

    def _fast_forward(self, run: _Running) -> list[int]:
        """The tokens the constraint forces next, already passed to it and appended to the output."""
        constraint = run.sampler.constraint
        if not isinstance(constraint, FastForwardConstraint):
            return []
        room = run.request.params.max_tokens - len(run.generated)
        forced = constraint.forced_tokens()[:room]
        for token in forced:
            constraint.advance(token)
        run.generated += forced
        return forced

    def _finish_after_forced(self, run: _Running) -> FinishReason | None:
        constraint = run.sampler.constraint
        if constraint is not None and constraint.is_finished():
            return "constraint"  # the forced tokens completed the output: nothing left to decode
        if len(run.generated) >= run.request.params.max_tokens:
            return "length"
        return None

    def cancel(self, key: int) -> None:
        run = self._running.pop(key, None)
        if run is not None:
            self.engine.release_slot(run.slot)

    def cancel_all(self) -> None:
        for key in list(self._running):
            self.cancel(key)


def generate(engine: Engine, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
    """Generate for many prompts at once; new prompts join as running ones finish."""
    batch = GenerationBatch(engine)
    results: dict[int, GenerateResult] = {}
    key_to_index: dict[int, int] = {}
    waiting = list(range(len(requests)))
    try:
        while waiting or batch.running:
            while waiting and batch.can_admit(requests[waiting[0]]):
                index = waiting.pop(0)
                key_to_index[batch.add(requests[index])] = index
            if not batch.running:
                raise ContextFullError(
                    "a request does not fit in the free KV cache",
                    "lower max_tokens or raise n_ctx",
                )
            for key, result in batch.step().items():
                results[key_to_index[key]] = result
    finally:
        batch.cancel_all()
    return [results[i] for i in range(len(requests))]
