"""Per-request plumbing shared by the routes: which model, the deadline, admission (429),
limits (413), the deadline turned into 504, and a client that disconnects cancelling its work."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Awaitable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import Request

from workhorse.serve.errors import ApiError, error_body
from workhorse.serve.metrics import Metrics
from workhorse.serve.settings import ServeSettings
from workhorse.serve.state import Admission, ServedModel, ServerState

T = TypeVar("T")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
DEADLINE_HEADER = "X-Deadline-Ms"


@dataclass
class Call:
    request: Request
    route: str
    state: ServerState
    model: ServedModel
    deadline: float  # time.monotonic() seconds
    task: str = ""
    _admission: Admission | None = None

    @property
    def settings(self) -> ServeSettings:
        return self.state.settings

    @property
    def metrics(self) -> Metrics:
        return self.state.metrics

    def check_text(self, text: str, param: str) -> None:
        limit = self.settings.max_item_chars
        if len(text) > limit:
            raise ApiError(413, f"{param} has {len(text)} characters; the limit is {limit}", param=param)
        lone = _LONE_SURROGATE.search(text)
        if lone:  # JSON can escape half a UTF-16 pair ("\ud800"); no tokenizer can take it
            raise ApiError(422, f"{param} is not valid Unicode: a lone surrogate at character {lone.start()}", param=param)

    def count_tokens(self, *, prompt: int = 0, completion: int = 0) -> None:
        if prompt:
            self.metrics.tokens.labels(self.model.name, "prompt").inc(prompt)
        if completion:
            self.metrics.tokens.labels(self.model.name, "completion").inc(completion)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Admission to the model's queue (429 when full) and the latency histogram. The place in
        the queue is kept until the engine work `hold` was given has left the engine."""
        started = time.perf_counter()
        with self.model.admit(self.metrics) as admission:
            self._admission = admission
            try:
                yield
            finally:
                self._admission = None
                self.metrics.latency.labels(self.route, self.model.name, self.task).observe(time.perf_counter() - started)

    def hold(self, work: asyncio.Future | Future) -> None:
        """Count `work` against this request's place in the queue until it is done."""
        if self._admission is not None:
            self._admission.hold(work)

    async def within_deadline(self, work: Awaitable[T]) -> T:
        """Await `work`; 504 when the deadline passes first. A client that disconnects cancels it."""
        work_task = asyncio.ensure_future(work)
        gone = asyncio.ensure_future(_disconnected(self.request))
        try:
            done, _ = await asyncio.wait({work_task, gone}, timeout=self.remaining(), return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if work_task in done:
            return work_task.result()
        work_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await work_task  # let the work's own cleanup (cancelling engine sequences) run
        if gone in done:
            raise ApiError(499, "client closed the request")
        raise self.deadline_error()

    async def stream_within_deadline(self, events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        """Relay events until the deadline; then one error event ends the stream (the 200 has gone)."""
        iterator = events.__aiter__()
        try:
            while True:
                try:
                    event = await asyncio.wait_for(iterator.__anext__(), self.remaining())
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    self.metrics.deadline_missed.labels(self.route).inc()
                    yield error_body(504, "deadline passed during the stream")
                    return
                yield event
        finally:
            await iterator.aclose()  # type: ignore[attr-defined]

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def queue_full(self, why: str) -> ApiError:
        return self.model.refuse(self.metrics, why)

    def deadline_error(self) -> ApiError:
        self.metrics.deadline_missed.labels(self.route).inc()
        return ApiError(504, f"the deadline of this request passed ({DEADLINE_HEADER} or the server default)")

    async def engine_work(self, future: Future) -> Any:
        """Await an engine future; cancelled (a deadline, a client gone), the work is withdrawn
        from the engine, and the request keeps its place in the queue until it has left."""
        self.hold(future)
        try:
            return await asyncio.shield(asyncio.wrap_future(future))
        except asyncio.CancelledError:
            self.model.worker.cancel(future)
            raise


def call_context(request: Request, route: str, model: str, *, task: str = "", default_deadline_ms: float | None = None) -> Call:
    state: ServerState = request.app.state.workhorse
    if not state.ready:
        raise ApiError(503, "the server is starting or shutting down", headers={"Retry-After": "1"})
    served = state.model(model)
    return Call(request, route, state, served, deadline_from(request, default_deadline_ms or state.settings.default_deadline_ms), task)


def deadline_from(request: Request, default_ms: float) -> float:
    raw = request.headers.get(DEADLINE_HEADER)
    if raw is None:
        return time.monotonic() + default_ms / 1000
    try:
        value = float(raw)
    except ValueError:
        raise ApiError(400, f"{DEADLINE_HEADER} must be a number of milliseconds, got {raw!r}") from None
    if not 0 < value <= 3_600_000:
        raise ApiError(400, f"{DEADLINE_HEADER} must be between 0 and 3600000 ms, got {raw}")
    return time.monotonic() + value / 1000


async def _disconnected(request: Request) -> None:
    """Returns when the client has gone (the body was read already, so the next ASGI message
    is the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
