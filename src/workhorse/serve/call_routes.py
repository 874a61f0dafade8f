"""`/v1/calls/{id}` and `/v1/calls/{id}/feedback`: a logged call, and a correction for it."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from workhorse.serve.errors import ApiError

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
    """Record the right answer for a call: training data for the small model, and accuracy in `workhorse logs stats`."""
    value = body.model_dump(exclude_none=True)
    found = await asyncio.wrap_future(_log(request).feedback(call_id, value))
    if not found:
        raise ApiError(404, f"no call with id {call_id}")
    return {"id": call_id, "feedback": value}
