"""Micro-batching of task items: requests for the same task that arrive within a short window
run as one batch.

A batch closes when it is full, when the window has passed, or earlier when waiting any longer
would eat into the tightest deadline among its items. Items whose caller has gone (a
disconnected client, a passed deadline) are dropped before the batch runs; a running batch whose
callers have all gone is withdrawn from the engine (see engine/cancel.py). Several batches of a
task may run at once, so a new batch's items join the engine's batches while earlier ones are
still decoding or waiting for an upstream; the engine thread merges batches of all tasks on a model.
At most `max_pending` items wait or run at once; beyond that `submit` refuses (the server's 429).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from workhorse.engine.cancel import CancelScope

# Batches of a task that may be in flight at once. The engine thread serialises (and merges) their
# model work anyway; the room is for batches that wait on the network (escalations), so that new
# items do not queue behind an upstream's time budget.
CONCURRENT_BATCHES = 8


class DeadlinePassed(Exception):
    """The item's deadline passed before its batch ran."""


class QueueFull(Exception):
    """The task has `max_pending` items waiting or running already."""


@dataclass
class _Item:
    text: str
    deadline: float  # time.monotonic() seconds
    future: asyncio.Future  # the answer; cancelled by a caller that stops waiting
    left: asyncio.Future  # resolved when the item has left the engine (answered, dropped or withdrawn)
    arrived: float = field(default_factory=time.monotonic)


@dataclass
class Submission:
    answers: list[asyncio.Future]  # one per item, in order
    left: asyncio.Future  # resolved when every item has left the engine


class TaskBatcher:
    def __init__(
        self,
        run: Callable[[Sequence[str]], list[Any]],
        *,
        window_s: float,
        max_batch: int,
        max_pending: int,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._run = run  # blocking, called in a thread as run(texts, arrived=…) (see Pipeline.run)
        # Threads of our own: in the shared default executor a batch could wait behind others'
        # work while its items' time (and their escalation budget) runs.
        self._threads = ThreadPoolExecutor(CONCURRENT_BATCHES, thread_name_prefix="task-batch")
        self._window_s = window_s
        self._max_batch = max_batch
        self._max_pending = max_pending
        self.pending = 0  # items queued or running
        self._on_batch = on_batch
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._slots = asyncio.Semaphore(CONCURRENT_BATCHES)
        self._loop_task: asyncio.Task | None = None
        self._running: set[asyncio.Task] = set()

    def submit(self, texts: Sequence[str], deadline: float) -> Submission:
        """Queue the items (cancel their answer futures to withdraw them), or raise QueueFull."""
        if self.pending + len(texts) > self._max_pending:
            raise QueueFull(f"{self.pending} items are waiting or running (limit {self._max_pending})")
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._collect())
        loop = asyncio.get_running_loop()
        items = [_Item(text, deadline, loop.create_future(), loop.create_future()) for text in texts]
        self.pending += len(items)
        for item in items:
            item.left.add_done_callback(self._one_left)
            self._queue.put_nowait(item)
        left = asyncio.gather(*(item.left for item in items))
        return Submission([item.future for item in items], left)

    def _one_left(self, _: asyncio.Future) -> None:
        self.pending -= 1

    async def close(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
        for task in list(self._running):
            task.cancel()
        self._threads.shutdown(wait=False, cancel_futures=True)

    async def _collect(self) -> None:
        while True:
            first = await self._queue.get()
            batch = [first]
            closes = time.monotonic() + self._window_s
            while len(batch) < self._max_batch:
                # Never hold items past the point where their deadline is at risk.
                remaining = min(closes, min(item.deadline for item in batch) - 0.001) - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._slots.acquire()
            task = asyncio.create_task(self._execute(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _execute(self, batch: list[_Item]) -> None:
        try:
            now = time.monotonic()
            for item in batch:
                if not item.future.done() and item.deadline <= now:
                    item.future.set_exception(DeadlinePassed())
            live = [item for item in batch if not item.future.done()]
            for item in batch:
                if item.future.done():  # dropped: it leaves now, not when the batch ends
                    _settle(item.left)
            if not live:
                return
            if self._on_batch:
                self._on_batch(len(live))
            scope = CancelScope(deadline=min(item.deadline for item in live))

            def withdraw(_: asyncio.Future) -> None:
                if all(item.future.done() for item in live):  # every caller has stopped waiting
                    scope.cancel()

            for item in live:
                item.future.add_done_callback(withdraw)
            try:
                loop = asyncio.get_running_loop()
                texts, arrived = [item.text for item in live], min(item.arrived for item in live)
                answers = await loop.run_in_executor(self._threads, _in_scope, scope, self._run, texts, arrived)
            except Exception as error:  # every item of the batch learns why
                for item in live:
                    if not item.future.done():
                        item.future.set_exception(error)
                return
            for item, answer in zip(live, answers, strict=True):
                if not item.future.done():
                    item.future.set_result(answer)
        finally:
            for item in batch:
                _settle(item.left)
            self._slots.release()


def _in_scope(scope: CancelScope, run: Callable[..., list[Any]], texts: list[str], arrived: float) -> list[Any]:
    with scope.active():
        return run(texts, arrived=arrived)


def _settle(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)
