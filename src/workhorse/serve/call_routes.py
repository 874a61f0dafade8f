"""`/v1/calls/{id}` and `/v1/calls/{id}/feedback`: a logged call, and a correction for it.

A correction is checked against the call's task as served here, else as stored (serve --ray
serves each model's tasks on its own replicas): a classify task's labels, an extract or convert
task's schema (422 naming what is wrong). A call whose task is neither served nor stored cannot
be checked: its correction is stored as given (it is the most valuable row of the log, and the
training loop checks it against the task it trains), and the answer says `"checked": false` (as
for kinds without labels)."""

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
    by: str | None = Field(None, max_length=200, description="Who gives the correction (logged with it; default: api).")

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
    `workhorse calls stats`. A label the call's task does not have, or fields its schema refuses,
    are refused (422)."""
    return await record_correction(request, call_id, body, by=body.by or "api")


async def record_correction(request: Request, call_id: int, body: Feedback, *, by: str) -> dict[str, Any]:
    """Check a correction against the call's task and log it with who gave it (the API and the
    console's review queue alike)."""
    log = _log(request)
    row = await asyncio.to_thread(log.get, call_id)
    if row is None:
        raise ApiError(404, f"no call with id {call_id}")
    spec = await asyncio.to_thread(request.app.state.workhorse.spec_of, row["task"])
    checked = spec is not None and _check(body, spec)
    value = body.model_dump(exclude_none=True, exclude={"by"})
    if not await committed(log.feedback(call_id, value, by=by)):  # pruned since it was read
        raise ApiError(404, f"no call with id {call_id}")
    return {"id": call_id, "feedback": value, "checked": checked, "by": by}


def _check(body: Feedback, spec: TaskSpec) -> bool:
    """A classify task's correction names its labels (or its out-of-scope label); an extract or
    convert task's fields are valid against its answer schema; 422 otherwise. False when there
    was nothing to check against."""
    if spec.kind in ("extract", "convert"):
        return _check_fields(body, spec)
    if spec.kind != "classify":
        return False
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


def _check_fields(body: Feedback, spec: TaskSpec) -> bool:
    """Fields valid against the task's own object schema (extract; convert to an object)."""
    import jsonschema

    from workhorse.escalation.request import answer_schema

    if body.fields is None:
        raise ApiError(422, f"task {spec.name} is an {spec.kind} task: correct it with `fields`", param="label")
    schema = answer_schema(spec)
    if schema is not spec.schema_:
        return False  # a converted value that is not an object: nothing in `fields` to check it with
    try:
        jsonschema.validate(body.fields, schema)
    except jsonschema.ValidationError as error:
        where = "/".join(str(part) for part in error.absolute_path) or "the answer"
        raise ApiError(422, f"the fields do not fit task {spec.name}'s schema at {where}: {error.message}",
                       param="fields") from None
    return True
