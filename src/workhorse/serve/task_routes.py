"""`/v1/tasks` and `/v1/tasks/{name}`: the task runners behind HTTP, micro-batched."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Request

from workhorse.serve.batching import DeadlinePassed, QueueFull
from workhorse.serve.errors import ApiError
from workhorse.serve.runtime import call_context
from workhorse.serve.schemas import TaskRequest
from workhorse.serve.state import ServedTask

router = APIRouter(prefix="/v1/tasks", tags=["tasks"])


def _describe(task: ServedTask) -> dict[str, Any]:
    spec = task.spec
    return {
        "name": spec.name,
        "kind": spec.kind,
        "version": spec.version,
        "model": task.model.name,
        "adapter": task.engine.adapter.short_name if task.engine is not None and task.engine.adapter else None,
        "description": spec.description,
        "labels": spec.label_names,
        "schema": spec.schema_,
    }


@router.get("")
async def list_tasks(request: Request) -> dict[str, Any]:
    return {"object": "list", "data": [_describe(t) for t in request.app.state.workhorse.tasks.values()]}


@router.get("/{name}")
async def show_task(name: str, request: Request) -> dict[str, Any]:
    return _describe(request.app.state.workhorse.task(name))


@router.post("/{name}")
async def run_task(name: str, body: TaskRequest, request: Request) -> dict[str, Any]:
    """One item (`input`) gives one answer object; a batch (`inputs`) gives `answers` in order."""
    state = request.app.state.workhorse
    task = state.task(name)
    if (body.input is None) == (body.inputs is None):
        raise ApiError(422, "send exactly one of `input` (one item) or `inputs` (a list of items)")
    texts = [body.input] if body.input is not None else body.inputs or []
    if not texts:
        raise ApiError(422, "inputs is empty", param="inputs")
    if len(texts) > state.settings.max_batch_items:
        raise ApiError(413, f"{len(texts)} items; the limit is {state.settings.max_batch_items} per request", param="inputs")
    call = call_context(request, "tasks", task.model.name, task=name, default_deadline_ms=task.spec.serve.deadline_ms)
    for i, text in enumerate(texts):
        param = "input" if body.input is not None else f"inputs[{i}]"
        call.check_text(text, param)
        if not text.strip():  # nothing to classify: a label for it would be made up
            raise ApiError(422, f"{param} is empty: send text to {task.spec.kind}", param=param)
    pipeline, batcher = task.ready()
    started = time.perf_counter()
    async with call.running():
        try:
            submission = batcher.submit(texts, call.deadline)
        except QueueFull as error:
            raise call.queue_full(str(error)) from None
        call.hold(submission.left)
        try:
            answers = await call.within_deadline(asyncio.gather(*submission.answers))
        except (ApiError, DeadlinePassed) as error:
            for future in submission.answers:
                future.cancel()  # withdraw the items: from the queue, or from the engine once all are gone
            missed = not isinstance(error, ApiError) or error.status == 504
            if not missed:
                raise
            if task.spec.serve.fallback is None:
                raise call.deadline_error() if not isinstance(error, ApiError) else error from None
            waited_ms = (time.perf_counter() - started) * 1000
            answers = await asyncio.to_thread(pipeline.fallback, texts, waited_ms=waited_ms)
    latency_ms = (time.perf_counter() - started) * 1000
    results = [answer.as_dict() | {"latency_ms": latency_ms, "model": task.model.name} for answer in answers]
    if body.input is not None:
        return results[0]
    return {"task": name, "version": task.spec.version, "model": task.model.name, "answers": results}
