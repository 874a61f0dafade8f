"""One generation on an engine thread, seen from asyncio: text arrives in pieces as it is
decoded, stop strings end it early, and abandoning it (client gone, deadline passed) cancels the
sequence in the engine so its slot is freed at the next step."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from workhorse.engine import EngineWorker, GenerateRequest

_DONE = object()


@dataclass
class Generation:
    text: str = ""
    finish_reason: str = "stop"  # OpenAI's: "stop" or "length" ("tool_calls" is set by the route)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    confidence: float | None = None


class TextStream:
    """Iterate `pieces()` for text as it is decoded; `result` is complete afterwards."""

    def __init__(self, worker: EngineWorker, request: GenerateRequest, stop: Sequence[str] = (),
                 on_submit: Callable[[Future], None] | None = None) -> None:
        self.worker = worker
        self.on_submit = on_submit  # told of the engine future (the server counts it against the queue)
        self.request = request
        self.stop = [s for s in stop if s]
        self.result = Generation(prompt_tokens=len(request.tokens))
        self._tokens: list[int] = []
        self._emitted = 0

    async def pieces(self) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        self.request.on_tokens = lambda tokens: loop.call_soon_threadsafe(queue.put_nowait, list(tokens))
        future = self.worker.submit_generate([self.request])
        if self.on_submit is not None:
            self.on_submit(future)
        future.add_done_callback(lambda _: loop.call_soon_threadsafe(queue.put_nowait, _DONE))
        finished = False
        try:
            while True:
                item = await queue.get()
                if item is _DONE:
                    break
                self._tokens += item
                piece, stopped = self._next_piece(final=False)
                if piece:
                    yield piece
                if stopped:
                    self.result.finish_reason = "stop"
                    finished = True
                    return
            [generated] = future.result()  # re-raises an engine error
            self.result.finish_reason = "length" if generated.finish_reason == "length" else "stop"
            self.result.confidence = generated.confidence
            piece, _ = self._next_piece(final=True)
            if piece:
                yield piece
            finished = True
        finally:
            self.result.completion_tokens = len(self._tokens)
            if not finished or not future.done():
                self.worker.cancel(future)  # abandoned, or ended by a stop string

    def _next_piece(self, *, final: bool) -> tuple[str, bool]:
        text = self.worker.model.detokenize(self._tokens)
        for stop in self.stop:
            at = text.find(stop)
            if at >= 0:
                return self._emit(text[:at]), True
        if not final:
            if text.endswith("\ufffd"):  # a character split across tokens: wait for the rest
                text = text.rstrip("\ufffd")
            # Hold back what could be the start of a stop string.
            hold = max((len(s) - 1 for s in self.stop), default=0)
            text = text[: max(len(text) - hold, self._emitted)]
        return self._emit(text), False

    def _emit(self, text: str) -> str:
        piece = text[self._emitted :]
        self._emitted = len(text)
        self.result.text = text
        return piece

    async def collect(self) -> Generation:
        async for _ in self.pieces():
            pass
        return self.result
