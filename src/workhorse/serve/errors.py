"""Errors as HTTP answers: every client mistake is a 4xx with a message that says what to fix,
in the OpenAI error shape (`{"error": {"message", "type", "param", "code"}}`) so OpenAI clients
surface it."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from workhorse.errors import (
    DecodeError,
    EngineBusyError,
    EngineClosedError,
    ServiceUnavailableError,
    TaskNotFoundError,
    TaskNotTrainedError,
    UnknownModelError,
    WorkCancelledError,
    WorkhorseError,
)

RETRY_AFTER = {"Retry-After": "1"}


class ApiError(Exception):
    """An error with its HTTP status; raised by route code, rendered by the handler below."""

    def __init__(self, status: int, message: str, *, param: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.headers = headers or {}


def error_body(status: int, message: str, param: str | None = None) -> dict[str, Any]:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


def status_for(error: WorkhorseError) -> tuple[int, dict[str, str]]:
    """By the error's type: the server's own faults are 5xx (503 with Retry-After when a retry
    soon may succeed), everything else is the request's mistake."""
    if isinstance(error, (EngineBusyError, EngineClosedError, WorkCancelledError, ServiceUnavailableError)):
        return 503, RETRY_AFTER
    if isinstance(error, DecodeError):
        return 500, {}
    if isinstance(error, (TaskNotFoundError, UnknownModelError)):
        return 404, {}
    if isinstance(error, TaskNotTrainedError):
        return 409, {}
    return 400, {}


def answer_for(error: WorkhorseError) -> JSONResponse:
    """The HTTP answer to a WorkhorseError: its status, and its message with the fix."""
    status, headers = status_for(error)
    message = f"{error.message} ({error.hint})" if error.hint else error.message
    return JSONResponse(error_body(status, message), status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, error: ApiError) -> JSONResponse:
        return JSONResponse(error_body(error.status, error.message, error.param), error.status, headers=error.headers)

    @app.exception_handler(WorkhorseError)
    async def _workhorse_error(_: Request, error: WorkhorseError) -> JSONResponse:
        return answer_for(error)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
        problems = []
        for item in error.errors():
            if item.get("type") == "json_invalid":  # its location is a character offset, not a field
                reason = (item.get("ctx") or {}).get("error", "")
                return JSONResponse(error_body(422, f"body is not valid JSON at character {item['loc'][-1]}: {reason}"), 422)
            where = ".".join(str(part) for part in item.get("loc", ()) if part != "body") or "body"
            problems.append(f"{where}: {item.get('msg', 'invalid')}")
        param = ".".join(str(p) for p in error.errors()[0].get("loc", ()) if p != "body") if error.errors() else None
        return JSONResponse(error_body(422, "; ".join(problems), param or None), 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(error_body(error.status_code, str(error.detail)), error.status_code, headers=error.headers)
