"""`workhorse run`: JSONL/CSV/stdin in, JSONL out; bad rows reported by line; resumable."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from workhorse.evals.datasets import load_file
from workhorse.tasks.fit import fit, task_for_data


@pytest.fixture
def trained_task(tiny_gguf, tmp_path) -> str:
    rows = [{"text": t, "label": label} for label, texts in
            {"refund": ["refund my money", "I want a refund"], "login": ["login error", "cannot login"]}.items()
            for t in texts for _ in range(8)]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    from workhorse.engine import Engine, EngineConfig, LlamaModel

    engine = Engine(LlamaModel(tiny_gguf), EngineConfig(n_ctx=1024, n_batch=128, n_slots=8, prefix_slots=2))
    dataset = load_file(data)
    fit(task_for_data("run-intents", dataset, model=str(tiny_gguf), prompt=None, layers=None), dataset, engine)
    engine.close()
    return "run-intents"


def _calls() -> list[dict]:
    from workhorse.calllog import CallLog
    from workhorse.paths import call_log_path

    log = CallLog(call_log_path())
    try:
        return list(log.iterate())
    finally:
        log.close()


def _run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workhorse.cli", "run", *args], input=stdin,
                          capture_output=True, text=True, timeout=120)


def test_jsonl_with_bad_rows_then_resume(trained_task, tmp_path: Path):
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "refund my money"}\n{"text": 5}\nnot json\n{"id": "b", "text": "login error"}\n')
    out = tmp_path / "out.jsonl"
    first = _run(trained_task, str(source), "--out", str(out))
    assert first.returncode == 0, first.stderr
    assert f"{source}:2: skipped" in first.stderr and f"{source}:3: skipped" in first.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == ["1", "b"]
    assert [r["answer"] for r in records] == ["refund", "login"]
    assert all(r["task"] == trained_task and r["version"] == 1 and 0 <= r["confidence"] <= 1 for r in records)
    assert all(r["source"] == "local" and isinstance(r["call_id"], int) for r in records)
    # An earlier run that crashed after logging "b" left its output line torn: the line is dropped,
    # done ids are skipped, and "b" is found answered in the call log, not answered (and logged) again.
    out.write_text(out.read_text().splitlines(keepends=True)[0] + '{"id": "b", "ans')
    second = _run(trained_task, str(source), "--out", str(out))
    assert "0 answered" in second.stderr and "1 already done" in second.stderr
    assert "1 found answered in the call log" in second.stderr
    resumed = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in resumed] == ["1", "b"] and resumed[1]["call_id"] == records[1]["call_id"]
    assert resumed[1]["answer"] == "login"
    calls = _calls()
    assert [c["input"] for c in calls] == ["refund my money", "login error"]  # each item logged once


def test_csv_and_stdin(trained_task, tmp_path: Path):
    source = tmp_path / "in.csv"
    source.write_text("id,text\nq1,cannot login\nq2,I want a refund\n")
    result = _run(trained_task, str(source))
    answers = {json.loads(line)["id"]: json.loads(line)["answer"] for line in result.stdout.splitlines()}
    assert answers == {"q1": "login", "q2": "refund"}
    piped = _run(trained_task, "-", "--format", "text", stdin="login error\nrefund my money\n")
    assert [json.loads(line)["answer"] for line in piped.stdout.splitlines()] == ["login", "refund"]


def test_missing_input_is_a_clear_error(trained_task, tmp_path: Path):
    result = _run(trained_task, str(tmp_path / "nope.jsonl"))
    assert result.returncode == 2 and "input file not found" in result.stderr


def test_tsv_with_a_bom_and_a_line_that_is_not_utf8(trained_task, tmp_path: Path):
    source = tmp_path / "in.tsv"
    source.write_bytes("\ufeffid\ttext\nq1\tcannot login\n".encode() + b"q2\tbad \xff byte\n" + b"q3\tI want a refund\n")
    result = _run(trained_task, str(source))
    assert result.returncode == 0, result.stderr
    assert f"{source}:3: skipped: not UTF-8 text" in result.stderr
    answers = {json.loads(line)["id"]: json.loads(line)["answer"] for line in result.stdout.splitlines()}
    assert answers == {"q1": "login", "q3": "refund"}
    piped = subprocess.run([sys.executable, "-m", "workhorse.cli", "run", trained_task, "-", "--format", "text"],
                           input=b"login error\n\xfe\xfe\nrefund my money\n", capture_output=True, timeout=120)
    assert b"-:2: skipped: not UTF-8 text" in piped.stderr
    assert [json.loads(line)["answer"] for line in piped.stdout.decode().splitlines()] == ["login", "refund"]
