"""The call log under trouble, on real SQLite files and processes: another connection holding the
write lock, a file size limit standing in for a full disk, a waiter that gives up, a closed log.
The writer outlives all of it, failures are CallLogError (503 from the server), and no wait is
without a deadline. And the feedback route checks labels against the served task."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from test_serve import CLASSIFY_TASK

import workhorse
from workhorse.calllog import CallLog, CallRecord, Retention
from workhorse.calllog.store import wait_committed
from workhorse.errors import CallLogError, ServiceUnavailableError
from workhorse.serve.app import create_app
from workhorse.serve.settings import ServeSettings
from workhorse.serve.state import ServerState

HANG_GUARD_S = 30  # generous: only there so that a broken writer fails the test instead of hanging it


def _call(i: int) -> CallRecord:
    return CallRecord(task="intents", model="m", input=f"ticket {i}", source="local", final_answer="refund")


@contextmanager
def _write_lock(path: Path) -> Iterator[None]:
    """Another connection holding the file's write lock, as a second process writing would."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


def test_a_busy_database_fails_the_batch_and_the_writer_carries_on(tmp_path, caplog):
    """The writer prunes after its first batch: with the file locked, that batch, the prune and the
    next batch all fail. The callers learn it (CallLogError, a 503), and once the lock is gone
    the same log writes calls and feedback again (before, the prune's error ended the writer:
    every later call failed and feedback waited forever)."""
    path = tmp_path / "calls.db"
    log = CallLog(path, retention=Retention(max_rows=100), busy_timeout_s=0.2)
    with _write_lock(path):
        for i in (1, 2):  # the writer is sequential: the prune ran between these two batches
            with pytest.raises(CallLogError, match="locked") as caught:
                log.record(_call(i)).result(HANG_GUARD_S)
    assert "write lock" in caught.value.hint and isinstance(caught.value, ServiceUnavailableError)
    assert any("cannot prune the call log" in record.getMessage() for record in caplog.records)
    call_id = log.record(_call(3)).result(HANG_GUARD_S)
    assert log.feedback(call_id, {"label": "login"}).result(HANG_GUARD_S) is True
    log.close()
    assert [row["input"] for row in CallLog.open_readonly(path).iterate()] == ["ticket 3"]


def test_a_waiter_that_gives_up_does_not_end_the_writer(tmp_path):
    """A client that goes away cancels its future while the writer waits on the lock; the writer
    still commits the call and then skips that future (setting it would raise)."""
    path = tmp_path / "calls.db"
    log = CallLog(path, busy_timeout_s=HANG_GUARD_S)
    with _write_lock(path):
        abandoned = log.record(_call(1))
        assert abandoned.cancel()
    assert log.record(_call(2)).result(HANG_GUARD_S) > 0
    log.close()
    assert [row["input"] for row in CallLog.open_readonly(path).iterate()] == ["ticket 1", "ticket 2"]


def test_waiting_has_a_deadline(tmp_path):
    path = tmp_path / "calls.db"
    log = CallLog(path, busy_timeout_s=HANG_GUARD_S)
    with _write_lock(path):
        pending = log.record(_call(1))
        with pytest.raises(CallLogError, match="did not commit within"):
            wait_committed(pending, timeout_s=0.2)
    assert wait_committed(pending) > 0  # committed once the lock went: late, not lost
    log.close()


def test_a_closed_log_refuses_at_once_instead_of_queueing_forever(tmp_path):
    log = CallLog(tmp_path / "calls.db")
    call_id = log.record(_call(1)).result(HANG_GUARD_S)
    log.close()
    with pytest.raises(CallLogError, match="closed"):
        log.feedback(call_id, {"label": "login"})
    with pytest.raises(CallLogError, match="closed"):
        log.record(_call(2))


FULL_DISK = """
import json, resource, signal, sys
from workhorse.calllog import CallLog, CallRecord
from workhorse.errors import CallLogError

path = sys.argv[1]
log = CallLog(path)
first = log.record(CallRecord(task="t", model="m", input="small", source="local")).result(30)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, hard))  # no file may grow past 256 KiB
failures = []
for i in range(40):
    try:
        log.record(CallRecord(task="t", model="m", input="x" * 100_000, source="local")).result(30)
    except CallLogError as error:
        failures.append([error.message, error.hint])
        break
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space again
after = log.record(CallRecord(task="t", model="m", input="after", source="local")).result(30)
log.close()
print(json.dumps({"first": first, "failures": failures, "after": after}))
"""


def test_a_full_disk_fails_calls_with_call_log_error_and_writing_resumes_after(tmp_path):
    """RLIMIT_FSIZE makes the kernel refuse writes past a size, as a full disk refuses them."""
    path = tmp_path / "calls.db"
    env = {**os.environ, "PYTHONPATH": str(Path(workhorse.__file__).parents[1])}
    done = subprocess.run([sys.executable, "-c", FULL_DISK, str(path)], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert len(result["failures"]) == 1, result
    message, hint = result["failures"][0]
    assert message.startswith(f"cannot write the call log {path}") and "disk" in hint
    assert result["after"] > result["first"]
    connection = sqlite3.connect(path)
    assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    inputs = [row[0] for row in connection.execute("SELECT input FROM calls ORDER BY id") if len(row[0]) < 100]
    connection.close()
    assert inputs == ["small", "after"]




@pytest.fixture
def served(tiny_gguf, tmp_path) -> Iterator[tuple[TestClient, ServerState]]:
    """A real server state (the tiny model, a classify task, a call log) behind the real app."""
    task = tmp_path / "toy-intents.yaml"
    task.write_text(CLASSIFY_TASK.format(model=tiny_gguf))
    settings = ServeSettings(models=[str(tiny_gguf)], tasks=[str(task)], threads=1, n_ctx=2048, n_slots=2,
                             call_log=str(tmp_path / "calls.db"))
    state = ServerState(settings)
    state.load()
    try:
        with TestClient(create_app(settings, state=state), base_url="http://localhost") as client:
            yield client, state
    finally:
        asyncio.run(state.close())


def test_feedback_with_a_label_the_task_does_not_have_is_refused(served):
    client, state = served
    call_id = client.post("/v1/tasks/toy-intents", json={"input": "my card was charged twice"}).json()["call_id"]
    refused = client.post(f"/v1/calls/{call_id}/feedback", json={"label": "cancel"})
    assert refused.status_code == 422
    assert refused.json()["error"]["message"] == "task toy-intents has no label 'cancel'; its labels: refund, login, card"
    assert client.post(f"/v1/calls/{call_id}/feedback", json={"labels": ["card", "nope"]}).status_code == 422
    assert client.post(f"/v1/calls/{call_id}/feedback", json={"fields": {"label": "card"}}).status_code == 422
    assert client.get(f"/v1/calls/{call_id}").json()["feedback"] is None  # nothing refused was stored
    given = client.post(f"/v1/calls/{call_id}/feedback", json={"label": "card"})
    assert given.status_code == 200
    assert given.json() == {"id": call_id, "feedback": {"label": "card"}, "checked": True, "by": "api"}
    assert client.get(f"/v1/calls/{call_id}").json()["feedback_by"] == "api"


def test_feedback_for_a_task_no_longer_served_is_kept_unchecked(served):
    """Its labels are unknown here; the correction is kept (the training loop checks it against
    the task it trains) and the answer says it was not checked."""
    client, state = served
    assert state.call_log is not None
    retired = CallRecord(task="retired-task", model="m", input="x", source="local", final_answer="a")
    call_id = state.call_log.record(retired).result(HANG_GUARD_S)
    given = client.post(f"/v1/calls/{call_id}/feedback", json={"label": "anything"})
    assert given.status_code == 200 and given.json()["checked"] is False
    assert client.get(f"/v1/calls/{call_id}").json()["feedback"] == {"label": "anything"}


def test_a_call_log_that_cannot_be_written_is_a_503_not_a_client_error(served):
    client, state = served
    call_id = client.post("/v1/tasks/toy-intents", json={"input": "reset my password"}).json()["call_id"]
    assert state.call_log is not None
    state.call_log.close()  # as during shutdown: nothing more can be committed
    answered = client.post("/v1/tasks/toy-intents", json={"input": "reset my password"})
    assert answered.status_code == 503 and answered.json()["error"]["type"] == "server_error"
    assert "call log" in answered.json()["error"]["message"]
    corrected = client.post(f"/v1/calls/{call_id}/feedback", json={"label": "login"})
    assert corrected.status_code == 503
