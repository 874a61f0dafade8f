"""The thread-safe front of an engine: one thread owns the llama context, callers queue work.

Work from many callers is merged: evaluation requests queued at the same time run in one
batched `evaluate`, and generation requests join the running generation batch between decode
steps (continuous batching across callers).
"""

from __future__ import annotations

import contextlib
import math
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future, InvalidStateError
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from workhorse.engine.adapter import Adapter
from workhorse.engine.cancel import current_scope
from workhorse.engine.engine import Engine, EngineConfig, EvalRequest, EvalResult
from workhorse.engine.generation import GenerateRequest, GenerateResult, GenerationBatch
from workhorse.engine.model import LlamaModel
from workhorse.errors import EngineBusyError, EngineClosedError, EngineError, WorkCancelledError

T = TypeVar("T")


@dataclass
class _EvalJob:
    requests: Sequence[EvalRequest]
    future: Future
    deadline: float | None = None  # time.monotonic(): when its caller stops waiting

    @property
    def urgency(self) -> float:
        return self.deadline if self.deadline is not None else math.inf

    @property
    def n_tokens(self) -> int:
        """The tokens it will decode: a cached prefix is (almost always) decoded once for many."""
        return sum(len(r.tokens) - r.prefix_len + sum(map(len, r.branches)) for r in self.requests)


@dataclass
class _GenJob:
    requests: Sequence[GenerateRequest]
    future: Future
    results: dict[int, GenerateResult] = field(default_factory=dict)


@dataclass
class _CallJob:
    fn: Callable[[Engine], Any]
    future: Future


@dataclass
class _CancelJob:
    target: Future  # a generation future: its sequences stop and free their slots


_STOP = object()


class EngineWorker:
    """Owns an engine on a dedicated thread. `model` is a GGUF path (loaded here) or a loaded
    model, which several workers may share: a model's engines with different LoRA adapters
    share its weights."""

    def __init__(self, model: str | Path | LlamaModel, config: EngineConfig | None = None, *, name: str | None = None) -> None:
        self.model = model if isinstance(model, LlamaModel) else LlamaModel(model, name=name)
        self.config = config or EngineConfig()
        self._queue: queue.Queue = queue.Queue()
        self._carried: list = []  # jobs taken off the queue between evaluation slices, for the main loop
        self._ready: Future = Future()
        thread_name = f"engine-{self.model.name}" + (f"-{self.adapter.short_name}" if self.adapter else "")
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)
        self._thread.start()
        self._ready.result()  # re-raises a context creation failure in the caller

    @property
    def adapter(self) -> Adapter | None:
        return self.config.adapter

    # -- public API (any thread) ------------------------------------------------------------
    def evaluate(self, requests: Sequence[EvalRequest]) -> list[EvalResult]:
        scope = current_scope()
        deadline = scope.deadline if scope is not None else None
        return self._wait(lambda chosen: self.submit_evaluate(chosen, deadline=deadline), requests)

    def submit_evaluate(self, requests: Sequence[EvalRequest], *, deadline: float | None = None) -> Future:
        """Queue an evaluation. Waiting evaluations run earliest `deadline` first (time.monotonic();
        None: after those with one), in slices of about a decode's worth of tokens, so that a short
        request with its deadline near does not wait for a long batch to finish."""
        future: Future = Future()
        self._put(_EvalJob(list(requests), future, deadline))
        return future

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        return self._wait(self.submit_generate, requests)

    def _wait(self, submit: Callable[[Sequence[Any]], Future], requests: Sequence[Any]) -> Any:
        """Submit and wait, inside the caller's cancel scope if it has one (see cancel.py)."""
        scope = current_scope()
        if scope is None:
            return submit(requests).result()
        scope.check()
        future = submit(requests)
        scope.track(self, future)
        try:
            return future.result()
        except CancelledError:
            raise WorkCancelledError("the work was withdrawn", "nobody waits for its answer any more") from None

    def submit_generate(self, requests: Sequence[GenerateRequest]) -> Future:
        future: Future = Future()
        if not requests:
            future.set_result([])
            return future
        self._put(_GenJob(list(requests), future))
        return future

    def cancel(self, future: Future) -> None:
        """Withdraw the work behind `future` (a client went away, a deadline passed): an evaluation
        not started yet is dropped, a generation's waiting requests are dropped and its running
        sequences leave the batch at the next step. The engine thread cancels the future when it
        is through with the work, so `future.done()` means the work has left the engine (the
        server counts a request against its queue until then). An evaluation already running
        finishes first: a forward pass is short."""
        if self._thread.is_alive():
            self._queue.put(_CancelJob(future))
        else:
            future.cancel()

    def call(self, fn: Callable[[Engine], T], *, timeout: float | None = None) -> T:
        """Run `fn(engine)` on the engine thread (for stats and KV inspection); with a timeout,
        EngineBusyError when the engine thread is still busy with a batch by then."""
        future: Future = Future()
        self._put(_CallJob(fn, future))
        try:
            return future.result(timeout)
        except FutureTimeout:
            future.cancel()
            raise EngineBusyError(f"the engine for {self.model.name} is busy", "try again shortly") from None

    def tokenize(self, text: str, **kwargs: Any) -> list[int]:
        return self.model.tokenize(text, **kwargs)  # llama.cpp tokenization is thread-safe

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()

    def __enter__(self) -> EngineWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _put(self, job: object) -> None:
        if not self._thread.is_alive():
            raise EngineClosedError(f"the engine for {self.model.name} is closed", "create a new EngineWorker")
        self._queue.put(job)

    # -- engine thread ----------------------------------------------------------------------
    def _run(self) -> None:
        try:
            engine = Engine(self.model, self.config)
        except BaseException as error:  # noqa: BLE001 - handed to the constructor's caller
            self._ready.set_exception(error)
            return
        self._ready.set_result(None)
        batch = GenerationBatch(engine)
        waiting: list[tuple[_GenJob, int]] = []  # (job, request index) not yet admitted
        owners: dict[int, tuple[_GenJob, int]] = {}  # batch key → (job, request index)
        deferred: list[_EvalJob] = []  # evaluations waiting for running generations to free room
        try:
            while True:
                carried, self._carried = self._carried, []
                idle = not batch.running and not waiting and not deferred and not carried
                jobs = deferred + carried + self._take_jobs(block=idle)
                if _STOP in jobs:
                    break
                # Withdrawals first: an evaluation withdrawn in the same breath as it was queued
                # is then dropped before it runs.
                for job in jobs:
                    if isinstance(job, _CancelJob):
                        self._cancel(batch, job.target, owners)
                deferred = self._run_calls_and_evals(engine, jobs, can_wait=bool(batch.running))
                for job in jobs:
                    if isinstance(job, _GenJob):
                        waiting.extend((job, i) for i in range(len(job.requests)))
                if not deferred:  # new sequences wait while evaluations wait for room
                    waiting = self._admit(batch, waiting, owners)
                if batch.running:
                    self._step(batch, owners)
        finally:
            batch.cancel_all()
            for job, _ in waiting:
                if not job.future.done():
                    _fail(job.future, EngineClosedError("the engine was closed"))
            for job in deferred:
                _fail(job.future, EngineClosedError("the engine was closed"))
            engine.close()

    def _take_jobs(self, *, block: bool) -> list:
        jobs = []
        if block:
            jobs.append(self._queue.get())
        while True:
            try:
                jobs.append(self._queue.get_nowait())
            except queue.Empty:
                return jobs

    def _run_calls_and_evals(self, engine: Engine, jobs: list, *, can_wait: bool) -> list[_EvalJob]:
        """Run the calls and evaluations among `jobs`; returns the evaluations deferred because
        running generations hold every slot or the KV room (`can_wait`: they will free it)."""
        for job in jobs:
            if isinstance(job, _CallJob) and not job.future.cancelled():
                _settle(job.future, lambda job=job: job.fn(engine))
        evals = [job for job in jobs if isinstance(job, _EvalJob) and not job.future.cancelled()]  # withdrawn: dropped
        if not evals:
            return []
        if can_wait and engine.free_slots == 0:
            return evals
        pending = sorted(evals, key=lambda job: job.urgency)  # stable: arrival order among equals
        while pending:
            chunk, pending = _slice(pending, self.config.n_batch)
            if not self._evaluate_jobs(engine, chunk, can_wait=can_wait):
                return chunk + pending
            if pending:  # what arrived meanwhile may be more urgent than what is left
                pending = sorted(pending + self._arrivals(pending), key=lambda job: job.urgency)
                pending = [job for job in pending if not job.future.cancelled()]
        return []

    def _evaluate_jobs(self, engine: Engine, evals: list[_EvalJob], *, can_wait: bool) -> bool:
        """Evaluate `evals` together and answer them; False when the engine had no room and
        they should wait (`can_wait`)."""
        merged = [request for job in evals for request in job.requests]
        try:
            results = engine.evaluate(merged)
        except EngineBusyError:
            if can_wait:
                return False
            for job in evals:
                _settle(job.future, lambda job=job: engine.evaluate(job.requests))
            return True
        except Exception:
            # One bad request must not fail its neighbours: retry each job alone.
            for job in evals:
                _settle(job.future, lambda job=job: engine.evaluate(job.requests))
            return True
        start = 0
        for job in evals:
            _resolve(job.future, results[start : start + len(job.requests)])
            start += len(job.requests)
        return True

    def _arrivals(self, pending: list[_EvalJob]) -> list[_EvalJob]:
        """Evaluations queued since the last look. The withdrawal of a `pending` one takes effect
        now; every other job waits for the main loop (`_carried`)."""
        waiting = {id(job.future) for job in pending}
        evals = []
        for job in self._take_jobs(block=False):
            if isinstance(job, _EvalJob):
                evals.append(job)
            elif isinstance(job, _CancelJob) and id(job.target) in waiting:
                job.target.cancel()
            else:
                self._carried.append(job)
        return evals

    @staticmethod
    def _cancel(batch: GenerationBatch, target: Future, owners: dict) -> None:
        for key, (job, _) in list(owners.items()):
            if job.future is target:
                batch.cancel(key)
                del owners[key]
        # A generation's sequences are gone, and its waiting requests are skipped by _admit; an
        # evaluation not run yet is dropped by _run_calls_and_evals.
        target.cancel()

    def _admit(self, batch: GenerationBatch, waiting: list, owners: dict) -> list:
        still_waiting = []
        for job, index in waiting:
            if job.future.done():
                continue
            request = job.requests[index]
            try:
                batch.check(request)
            except Exception as error:
                _fail(job.future, error)
                continue
            if still_waiting or not batch.can_admit(request):
                still_waiting.append((job, index))
                continue
            try:
                owners[batch.add(request)] = (job, index)
            except Exception as error:
                _fail(job.future, error)
        if still_waiting and not batch.running and batch.engine.prefix_cache.tokens:
            batch.engine.clear_prefixes()  # snapshots are a cache: a request's room comes first
            return self._admit(batch, still_waiting, owners)
        if still_waiting and not batch.running:
            # Nothing running, no snapshot held, and the head still does not fit: it never will.
            job, index = still_waiting.pop(0)
            _fail(
                job.future,
                EngineError(
                    f"request {index} needs more KV cache than the context has",
                    "lower max_tokens, shorten the prompt or raise n_ctx",
                ),
            )
        return still_waiting

    def _step(self, batch: GenerationBatch, owners: dict) -> None:
        try:
            finished = batch.step()
        except Exception as error:
            for key, (job, _) in list(owners.items()):
                if not job.future.done():
                    _fail(job.future, error)
                batch.cancel(key)
            owners.clear()
            return
        for key, result in finished.items():
            job, index = owners.pop(key)
            job.results[index] = result
            if len(job.results) == len(job.requests) and not job.future.done():
                _resolve(job.future, [job.results[i] for i in range(len(job.requests))])


def _slice(jobs: list[_EvalJob], budget: int) -> tuple[list[_EvalJob], list[_EvalJob]]:
    """(the first jobs whose tokens fit `budget`, at least one; the rest)."""
    taken = used = 0
    while taken < len(jobs) and (taken == 0 or used + jobs[taken].n_tokens <= budget):
        used += jobs[taken].n_tokens
        taken += 1
    return jobs[:taken], jobs[taken:]


def _settle(future: Future, fn: Callable[[], Any]) -> None:
    try:
        _resolve(future, fn())
    except Exception as error:
        _fail(future, error)


# A caller may cancel its future at any time (worker.cancel); the engine thread must not trip on it.
def _resolve(future: Future, result: Any) -> None:
    with contextlib.suppress(InvalidStateError):
        future.set_result(result)


def _fail(future: Future, error: BaseException) -> None:
    with contextlib.suppress(InvalidStateError):
        future.set_exception(error)
