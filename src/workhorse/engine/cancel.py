"""Withdrawing engine work that nobody waits for any more.

A server answers 504 at a request's deadline, or its client goes away; the model work behind it
must stop too, or abandoned requests keep the engine busy for the ones that still wait. Blocking
calls cannot be interrupted from outside, so the caller runs them inside a `CancelScope`:

    scope = CancelScope()
    with scope.active():                 # in the thread that calls the engine
        answers = pipeline.run(texts)    # every EngineWorker.evaluate/generate here is tracked
    scope.cancel()                       # from any thread: tracked work is withdrawn, and every
                                         # later call in the scope raises WorkCancelledError

A generation stops at its next decode step and frees its sequence; an evaluation still queued is
dropped before it runs (one already running finishes: a forward pass is short).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

from workhorse.errors import WorkCancelledError

if TYPE_CHECKING:
    from workhorse.engine.worker import EngineWorker

_current: ContextVar[CancelScope | None] = ContextVar("workhorse_cancel_scope", default=None)


class CancelScope:
    def __init__(self, deadline: float | None = None) -> None:
        # The earliest deadline of the work in the scope (time.monotonic()): the engine runs
        # waiting evaluations earliest deadline first.
        self.deadline = deadline
        self._lock = threading.Lock()
        self._cancelled = False
        self._tracked: list[tuple[EngineWorker, Future]] = []

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    @contextmanager
    def active(self) -> Iterator[CancelScope]:
        token = _current.set(self)
        try:
            yield self
        finally:
            _current.reset(token)

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            tracked, self._tracked = self._tracked, []
        for worker, future in tracked:
            worker.cancel(future)

    def check(self) -> None:
        if self._cancelled:
            raise WorkCancelledError("the work was withdrawn", "nobody waits for its answer any more")

    def track(self, worker: EngineWorker, future: Future) -> None:
        with self._lock:
            cancelled = self._cancelled
            if not cancelled:
                self._tracked.append((worker, future))
        if cancelled:
            worker.cancel(future)
        else:  # outside the lock: a future already done calls `_forget` right here
            future.add_done_callback(self._forget)

    def _forget(self, future: Future) -> None:
        with self._lock:
            self._tracked = [(w, f) for w, f in self._tracked if f is not future]


def current_scope() -> CancelScope | None:
    return _current.get()
