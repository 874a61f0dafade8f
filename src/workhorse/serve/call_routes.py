"""`/v1/calls/{id}` and `/v1/calls/{id}/feedback`: a logged call, and a correction for it.

A correction for a call of a served classify task is checked against the task's labels (422
naming them). A call whose task this server no longer serves cannot be checked: its correction
is stored as given (it is the most valuable row of the log, and the training loop checks it
against the task it trains), and the answer says `"checked": false` (as for kinds without labels)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from workhorse.calllog.store import committed
from workhorse.serve.errors import ApiError
from workhorse.tasks.spec import TaskSpec

router = APIRouter(prefix="/v1/calls", tags=["call log"])
CallId = Path(ge=1, le=2**63 - 1, description="The call's id (SQLite rowid).")


class Feedback(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: str | None = Field(None, description="The correct label (classify).")
    labels: list[str] | None = Field(None, description="The correct labels (multi-label classify).")
    fields: dict[str, Any] | None = Field(None, description="The correct fields (extract, convert).")
    note: str | None = Field(None, max_length=2000)

    @model_validator(mode="after")
    def _one_correction(self) -> Feedback:
        if sum(value is not None for value in (self.label, self.labels, self.fields)) != 1:
            raise ValueError("give exactly one of `label`, `labels` or `fields`")
        return self


def _log(request: Request):
    log = request.app.state.workhorse.call_log
    if log is None:
        raise ApiError(404, "the call log is off on this server (log_calls: false)")
    return log


@router.get("/{call_id}")
async def show_call(request: Request, call_id: int = CallId) -> dict[str, Any]:
    row = await asyncio.to_thread(_log(request).get, call_id)
    if row is None:
        raise ApiError(404, f"no call with id {call_id}")
    return row


@router.post("/{call_id}/feedback")
async def feedback(body: Feedback, request: Request, call_id: int = CallId) -> dict[str, Any]:
    """Record the right answer for a call: training data for the small model, and accuracy in
    `workhorse calls stats`. A label the call's task does not have is refused (422)."""
    log = _log(request)
    row = await asyncio.to_thread(log.get, call_id)
    if row is None:
        raise ApiError(404, f"no call with id {call_id}")
    served = request.app.state.workhorse.tasks.get(row["task"])
    checked = served is not None and _check_labels(body, served.spec)
    value = body.model_dump(exclude_none=True)
    if not await committed(log.feedback(call_id, value)):  # pruned since it was read
        raise ApiError(404, f"no call with id {call_id}")
    return {"id": call_id, "feedback": value, "checked": checked}


def _check_labels(body: Feedback, spec: TaskSpec) -> bool:
    """A classify task's correction names its labels (or its out-of-scope label); 422 otherwise.
    False when there was nothing to check against."""
    if spec.kind != "classify":
        return False  # extract and convert answers have no fixed set to check against
    if body.fields is not None:
        raise ApiError(422, f"task {spec.name} is a classify task: correct it with `label` or `labels`", param="fields")
    allowed = spec.label_names
    if spec.classify.out_of_scope is not None:
        allowed = [*allowed, spec.classify.out_of_scope.label]
    given = [body.label] if body.label is not None else list(body.labels or [])
    unknown = [label for label in given if label not in allowed]
    if unknown:
        raise ApiError(422, f"task {spec.name} has no label {', '.join(map(repr, unknown))}; its labels: {', '.join(allowed)}",
                       param="label" if body.label is not None else "labels")
    return True
