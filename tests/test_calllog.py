"""The call log on real SQLite files: migrations (also by threads and processes opening one fresh
file at once), group commit, feedback, retention (which keeps feedback), and no acknowledged call
lost when the writing process is killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import workhorse
from workhorse.calllog import CallLog, CallRecord, Retention
from workhorse.calllog.schema import MIGRATIONS
from workhorse.errors import CallLogError


def _call(i: int, **extra) -> CallRecord:
    return CallRecord(task="intents", model="gemma3-270m", input=f"ticket {i}", source="local", task_version=2,
                      output={"label": "refund"}, final_answer="refund", confidence=0.9, latency_ms=12.5, **extra)


def test_a_recorded_call_reads_back_with_its_json(tmp_path):
    log = CallLog(tmp_path / "calls.db")
    call_id = log.record(_call(1, redactions={"EMAIL": 1}, escalated=True, upstream_model="big")).result(10)
    row = log.get(call_id)
    assert row["input"] == "ticket 1" and row["output"] == {"label": "refund"} and row["final_answer"] == "refund"
    assert row["redactions"] == {"EMAIL": 1} and row["escalated"] is True and row["escalation_failed"] is False
    assert log.get(call_id + 100) is None
    log.close()


def test_concurrent_writers_all_land_in_order_of_commit(tmp_path):
    log = CallLog(tmp_path / "calls.db")
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda i: log.record(_call(i)).result(30), range(400)))
    assert len(set(ids)) == 400 and log.count() == 400
    assert [r["id"] for r in log.list(limit=3)] == sorted(ids)[-1:-4:-1]  # newest first
    assert len(list(log.iterate(task="intents"))) == 400 and not list(log.iterate(task="other"))
    log.close()


def test_feedback_is_recorded_and_unknown_ids_are_reported(tmp_path):
    log = CallLog(tmp_path / "calls.db")
    call_id = log.record(_call(1)).result(10)
    assert log.feedback(call_id, {"label": "cancel_order"}).result(10) is True
    assert log.feedback(call_id + 1, {"label": "x"}).result(10) is False
    row = log.get(call_id)
    assert row["feedback"] == {"label": "cancel_order"} and row["feedback_at"] >= row["created_at"]
    log.close()


def test_migrations_apply_once_and_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "calls.db"
    CallLog(path).close()
    CallLog(path).close()  # reopening applies nothing twice
    connection = sqlite3.connect(path)
    assert connection.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    connection.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    connection.close()
    with pytest.raises(CallLogError, match="newer than this workhorse knows") as refused:
        CallLog(path)
    assert "upgrade workhorse" in refused.value.hint


def test_retention_drops_old_calls_and_keeps_the_newest_rows(tmp_path):
    retention = Retention(max_rows=10, days=1)
    log = CallLog(tmp_path / "calls.db", retention=retention)
    ancient = CallRecord(task="t", model="m", input="ancient", source="local", created_at=time.time() - 3 * 86400)
    log.record(ancient).result(10)  # the writer prunes after its first commit, then once a minute
    for i in range(30):
        log.record(_call(i)).result(10)
    log.close()
    log = CallLog(tmp_path / "calls.db", retention=retention)
    log.record(_call(30)).result(10)
    log.close()
    reopened = CallLog(tmp_path / "calls.db")
    inputs = [row["input"] for row in reopened.iterate()]
    reopened.close()
    assert inputs == [f"ticket {i}" for i in range(21, 31)]


def test_retention_never_prunes_calls_with_feedback(tmp_path):
    """Corrections are the most valuable rows: neither age nor the row limit removes them, and
    they do not count against the limit."""
    path = tmp_path / "calls.db"
    log = CallLog(path)
    ancient = CallRecord(task="t", model="m", input="ancient", source="local", created_at=time.time() - 3 * 86400)
    ancient_id = log.record(ancient).result(10)
    ids = [log.record(_call(i)).result(10) for i in range(30)]
    for corrected in (ancient_id, ids[2], ids[5]):
        assert log.feedback(corrected, {"label": "login"}).result(10) is True
    log.close()
    log = CallLog(path, retention=Retention(max_rows=10, days=1))
    log.record(_call(30)).result(10)  # the writer prunes after its first commit
    log.close()
    reopened = CallLog.open_readonly(path)
    kept = [(row["input"], row["feedback"]) for row in reopened.iterate()]
    corrected = [name for name, feedback in kept if feedback is not None]
    assert corrected == ["ancient", "ticket 2", "ticket 5"]
    assert [name for name, feedback in kept if feedback is None] == [f"ticket {i}" for i in range(21, 31)]


WRITER = """
import sys, threading
from workhorse.calllog import CallLog, CallRecord
log = CallLog(sys.argv[1])
def done(future):
    print(future.result(), flush=True)   # acknowledged: committed
i = 0
while True:
    for _ in range(50):
        log.record(CallRecord(task="t", model="m", input=f"item {i}", source="local")).add_done_callback(done)
        i += 1
"""


def test_every_acknowledged_call_survives_sigkill(tmp_path):
    path = tmp_path / "calls.db"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    acknowledged = []
    for line in writer.stdout:
        acknowledged.append(int(line))
        if len(acknowledged) >= 3000:
            break
    writer.send_signal(signal.SIGKILL)
    writer.wait(30)
    acknowledged += [int(line) for line in writer.stdout.read().split()]
    writer.stdout.close()
    connection = sqlite3.connect(path)
    assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    present = {row[0] for row in connection.execute("SELECT id FROM calls")}
    connection.close()
    assert set(acknowledged) <= present and len(acknowledged) >= 3000


def test_threads_opening_one_fresh_file_at_once_migrate_it_once(tmp_path):
    """The version is read under the write lock (the second opener finds the tables made), and the
    switch to WAL waits out a concurrent opener (SQLite answers BUSY there without waiting)."""
    for round_ in range(40):
        path = tmp_path / f"calls-{round_}.db"
        start = threading.Barrier(6)
        errors: list[BaseException] = []

        def open_and_record(i: int, path: Path = path, start: threading.Barrier = start) -> None:
            start.wait(30)
            try:
                log = CallLog(path)
                log.record(_call(i)).result(30)
                log.close()
            except BaseException as error:  # collected: an exception in a thread would be lost
                errors.append(error)

        threads = [threading.Thread(target=open_and_record, args=(i,)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors, errors
        connection = sqlite3.connect(path)
        assert connection.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert connection.execute("SELECT COUNT(*) FROM calls").fetchone()[0] == 6
        connection.close()


OPENER = """
import sys, time
from workhorse.calllog import CallLog, CallRecord
path, start_at = sys.argv[1], float(sys.argv[2])
time.sleep(max(0.0, start_at - time.time()))  # every process opens at the same moment
log = CallLog(path)
print(log.record(CallRecord(task="t", model="m", input="x", source="local")).result(30))
log.close()
"""


def test_processes_opening_one_fresh_file_at_once_all_succeed(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(workhorse.__file__).parents[1])}
    for round_ in range(2):
        path = tmp_path / f"calls-{round_}.db"
        start_at = time.time() + 3  # after every interpreter has started and imported workhorse
        openers = [subprocess.Popen([sys.executable, "-c", OPENER, str(path), str(start_at)], env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
        outputs = [opener.communicate(timeout=120) for opener in openers]
        assert all(opener.returncode == 0 for opener in openers), [err for _, err in outputs]
        assert sorted(int(out) for out, _ in outputs) == [1, 2, 3, 4]


def test_an_older_log_is_upgraded_in_place(tmp_path):
    path = tmp_path / "calls.db"
    connection = sqlite3.connect(path)
    connection.executescript(MIGRATIONS[0] + "\nPRAGMA user_version = 1;")
    connection.execute("INSERT INTO calls (created_at, task, model, input, source) VALUES (1.0, 't', 'm', 'old', 'local')")
    connection.commit()
    connection.close()
    log = CallLog(path)
    new_id = log.record(_call(1, upstream_prompt_estimate=321)).result(10)
    rows = {r["id"]: r for r in log.iterate()}
    log.close()
    assert rows[1]["input"] == "old" and rows[1]["upstream_prompt_estimate"] is None
    assert rows[new_id]["upstream_prompt_estimate"] == 321
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


def test_upgrading_adds_up_the_calls_already_logged_into_the_rollup(tmp_path):
    from workhorse.calllog.rollup import read_rollup
    from workhorse.calllog.totals import CallTotals

    path = tmp_path / "calls.db"
    connection = sqlite3.connect(path)
    for migration in MIGRATIONS[:3]:
        connection.executescript(migration)
    connection.execute("PRAGMA user_version = 3")
    rows = [(3600.5 * i, "t", 1 + i % 2, "m", f"item {i}", '"a"', '"a"' if i % 3 else '"b"', "local", 10.0 + i,
             '{"label": "a"}' if i % 4 == 0 else None) for i in range(40)]
    connection.executemany("INSERT INTO calls (created_at, task, task_version, model, input, output, final_answer, source, "
                           "latency_ms, feedback) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    connection.commit()
    connection.close()
    with CallLog(path) as log:
        expected = CallTotals()
        for call in log.iterate():
            expected.add(call)
        new_id = log.record(_call(1)).result(10)
        with log.reading() as reading:
            hours = read_rollup(reading)
    rolled = CallTotals()
    for (task, version, hour), totals in hours:
        if task == "t":
            rolled.merge(totals)
    assert rolled == expected and rolled.calls == 40 and rolled.judged == 10
    assert rolled.correct == sum(1 for i in range(0, 40, 4) if i % 3)  # final answer "a" where it was right
    assert {version for (task, version, _), _ in hours if task == "t"} == {1, 2} and new_id == 41


def test_a_new_correction_replaces_the_old_one_in_the_rollup(tmp_path):
    from workhorse.calllog.rollup import read_rollup

    with CallLog(tmp_path / "calls.db") as log:
        call_id = log.record(_call(1)).result(10)
        answer = log.get(call_id)["final_answer"]
        log.feedback(call_id, {"label": "wrong"}, by="a").result(10)
        log.feedback(call_id, {"label": answer}, by="b").result(10)
        with log.reading() as reading:
            [(_, totals)] = [entry for entry in read_rollup(reading)]
        assert log.get(call_id)["feedback_by"] == "b"
    assert (totals.judged, totals.correct) == (1, 1)
