"""`workhorse calls list|show|export|stats` over a real call log (and the old `logs` names, deprecated);
they read it read-only, and a file that is not a call log, or is of a newer schema, is a clean error."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

import workhorse
from workhorse.calllog import CallLog, CallRecord
from workhorse.calllog.schema import MIGRATIONS
from workhorse.cli import app
from workhorse.errors import CallLogError


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "calls.db"
    log = CallLog(path)
    for i in range(8):
        escalated = i < 2
        call = CallRecord(
            task="intents", model="gemma3-270m", input=f"ticket {i}", source="upstream" if escalated else "local",
            output="refund", final_answer="login" if escalated else "refund", confidence=0.3 if escalated else 0.95,
            latency_ms=20.0, local_cpu_s=0.05, prompt_tokens=12, completion_tokens=0, escalated=escalated,
            escalation_reason="low_confidence" if escalated else None, upstream_model="gpt-4o-mini" if escalated else None,
            upstream_prompt_tokens=100 if escalated else None, upstream_completion_tokens=10 if escalated else None,
            upstream_cost=(100 * 0.15 + 10 * 0.60) / 1e6 if escalated else None,
        )
        log.record(call).result(10)
    log.feedback(1, {"label": "login"}).result(10)  # right (escalated, answered login)
    log.feedback(3, "cancel").result(10)  # wrong (answered refund)
    log.close()
    return str(path)


def test_list_show_and_export(db):
    runner = CliRunner()
    listed = runner.invoke(app, ["calls", "list", "--db", db, "--json", "--limit", "3"])
    assert listed.exit_code == 0, listed.output
    assert [json.loads(line)["id"] for line in listed.output.splitlines()] == [8, 7, 6]
    shown = runner.invoke(app, ["calls", "show", "1", "--db", db])
    assert json.loads(shown.output)["feedback"] == {"label": "login"}
    missing = runner.invoke(app, ["calls", "show", "99", "--db", db])
    assert missing.exit_code != 0
    exported = runner.invoke(app, ["calls", "export", "--jsonl", "--db", db])
    assert [json.loads(line)["input"] for line in exported.output.splitlines()] == [f"ticket {i}" for i in range(8)]


def test_stats_compare_the_bill_with_sending_everything_upstream(db):
    result = CliRunner().invoke(app, ["calls", "stats", "--db", db, "--json"])
    assert result.exit_code == 0, result.output
    task = json.loads(result.output)["tasks"]["intents"]
    assert task["calls"] == 8 and task["escalated"] == 2 and task["escalation_rate"] == 0.25
    upstream_each = (100 * 0.15 + 10 * 0.60) / 1e6
    assert task["upstream_cost"] == pytest.approx(2 * upstream_each)
    assert task["all_large_cost"] == pytest.approx(8 * upstream_each)  # the others at the escalated calls' tokens
    assert task["actual_cost"] == pytest.approx(2 * upstream_each + task["local_cost"])
    assert task["savings"] == pytest.approx(1 - task["actual_cost"] / task["all_large_cost"])
    assert task["accuracy"] == 0.5 and task["with_feedback"] == 2
    table = CliRunner().invoke(app, ["calls", "stats", "--db", db])
    assert table.exit_code == 0 and "call log" in table.output


def test_the_old_logs_names_still_work_with_a_note(db):
    result = CliRunner().invoke(app, ["logs", "list", "--db", db, "--json", "--limit", "2"])
    assert result.exit_code == 0, result.output
    assert "is now `workhorse calls list`" in result.stderr
    assert [json.loads(line)["id"] for line in result.stdout.splitlines()] == [8, 7]


def test_a_missing_log_says_where_it_looked(tmp_path):
    result = CliRunner().invoke(app, ["calls", "list", "--db", str(tmp_path / "none.db")])
    assert result.exit_code != 0


def test_all_large_uses_each_calls_own_estimate(tmp_path):
    path = tmp_path / "calls.db"
    log = CallLog(path)
    log.record(CallRecord(task="t", model="m", input="a", source="upstream", escalated=True, upstream_model="gpt-4o",
                          upstream_prompt_tokens=100, upstream_completion_tokens=10, upstream_cost=0.00035)).result(10)
    log.record(CallRecord(task="t", model="m", input="b", source="local", upstream_prompt_estimate=300)).result(10)
    log.close()
    task = json.loads(CliRunner().invoke(app, ["calls", "stats", "--db", str(path), "--json"]).output)["tasks"]["t"]
    # gpt-4o: $2.50 / $10.00 per million; the local call at its own 300 tokens in and the mean 10 out
    assert task["all_large_cost"] == pytest.approx((100 * 2.5 + 10 * 10) / 1e6 + (300 * 2.5 + 10 * 10) / 1e6)


def test_an_upstream_without_a_price_at_call_time_is_priced_from_its_tokens(tmp_path, monkeypatch):
    """A local upstream has no list price when it is called; prices.yaml can price it afterwards."""
    path = tmp_path / "calls.db"
    log = CallLog(path)
    log.record(CallRecord(task="t", model="m", input="a", source="upstream", escalated=True, upstream_model="local-qwen",
                          upstream_prompt_tokens=200, upstream_completion_tokens=20, upstream_cost=None)).result(10)
    log.close()
    monkeypatch.setenv("WORKHORSE_HOME", str(tmp_path))

    def stats() -> dict:
        return json.loads(CliRunner().invoke(app, ["calls", "stats", "--db", str(path), "--json"]).output)["tasks"]["t"]

    assert stats()["upstream_cost"] is None  # no price anywhere: unknown, not zero
    (tmp_path / "prices.yaml").write_text("models:\n  local-qwen: {input: 1.0, output: 2.0}\n")
    assert stats()["upstream_cost"] == pytest.approx((200 * 1.0 + 20 * 2.0) / 1e6)


def _cli(*args: str) -> subprocess.CompletedProcess:
    """The installed entry point in a process of its own: its exit code and what it printed."""
    env = {**os.environ, "PYTHONPATH": str(Path(workhorse.__file__).parents[1])}
    return subprocess.run([sys.executable, "-m", "workhorse.cli", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_a_file_that_is_not_a_call_log_is_a_clean_error(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# not a database\n" * 200)
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()  # a database, but no calls table
    for path, problem in ((readme, "file is not a database"), (empty, "is not a call log")):
        result = _cli("calls", "list", "--db", str(path))
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr and problem in result.stderr
        assert "error:" in result.stderr and "hint: pass the call log" in result.stderr
    assert readme.read_text() == "# not a database\n" * 200


def test_a_log_of_a_newer_schema_is_a_clean_error(db):
    connection = sqlite3.connect(db)
    connection.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    connection.close()
    result = _cli("calls", "stats", "--db", db)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "newer than this workhorse knows" in result.stderr and "hint: upgrade workhorse" in result.stderr


def test_reading_an_older_log_neither_migrates_nor_writes_it(tmp_path):
    """The read commands open the file read-only (no migration, no writer): columns added since
    read as null."""
    path = tmp_path / "calls.db"
    connection = sqlite3.connect(path)
    connection.executescript(MIGRATIONS[0] + "\nPRAGMA user_version = 1;")
    connection.execute("INSERT INTO calls (created_at, task, model, input, source, final_answer, feedback) "
                       "VALUES (1.0, 't', 'm', 'old', 'local', '\"a\"', '\"a\"')")
    connection.commit()
    connection.close()
    before = path.read_bytes()
    runner = CliRunner()
    listed = runner.invoke(app, ["calls", "list", "--db", str(path), "--json"])
    assert listed.exit_code == 0, listed.output
    [row] = [json.loads(line) for line in listed.output.splitlines()]
    assert row["input"] == "old" and row["request_ref"] is None and row["upstream_prompt_estimate"] is None
    for command in (["show", "1"], ["export", "--jsonl"], ["stats", "--json"], ["list"]):
        result = runner.invoke(app, ["calls", *command, "--db", str(path)])
        assert result.exit_code == 0, result.output
    assert json.loads(runner.invoke(app, ["calls", "stats", "--db", str(path), "--json"]).output)["tasks"]["t"]["accuracy"] == 1.0
    assert path.read_bytes() == before
    connection = sqlite3.connect(path)
    assert connection.execute("PRAGMA user_version").fetchone()[0] == 1
    connection.close()


def test_a_read_only_log_starts_no_writer_and_refuses_writes(db):
    threads = {thread.name for thread in threading.enumerate()}
    log = CallLog.open_readonly(db)
    assert {thread.name for thread in threading.enumerate()} == threads
    assert log.count() == 8
    with pytest.raises(CallLogError, match="read-only"):
        log.record(CallRecord(task="t", model="m", input="x", source="local"))
    log.close()


def test_a_task_dearer_than_the_large_model_says_so_plainly(db, tmp_path, monkeypatch):
    monkeypatch.setenv("WORKHORSE_HOME", str(tmp_path))
    (tmp_path / "prices.yaml").write_text("cpu_second: 0.01\n")  # local time far dearer than the upstream's tokens
    result = CliRunner().invoke(app, ["calls", "stats", "--db", db], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "× the all-large price" in result.output and not re.search(r"-\d+(\.\d+)? %", result.output)
    assert "cpu_second" in result.output
