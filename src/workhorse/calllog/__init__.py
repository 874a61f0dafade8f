"""The call log: every answered call, kept in SQLite for training data and the bill."""

from workhorse.calllog.store import CallLog, CallRecord, Retention

__all__ = ["CallLog", "CallRecord", "Retention"]
