"""Every command with `--json` prints one JSON document on stdout and nothing else (notices and
progress go to stderr), run as a real process so stdout and stderr are what a shell sees.

Run on the tiny test model: models, tasks, fit, eval, run, calls, bench engine and bench
adversarial. `bench classify`, `bench serve`, `bench soak` and `bench logs` need the shared
datasets and the built-in models (and minutes); their stdout goes through the same
`typer.echo(json.dumps(report))` as the others, and their notices through a stderr console."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PHRASES = {"refund": ["refund my money", "I want a refund", "give the money back"],
           "login": ["login error", "cannot login", "the password is wrong"]}


def _workhorse(*args: str, home: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    env = os.environ | {"WORKHORSE_HOME": str(home), "WORKHORSE_CALL_LOG": str(home / "calls.db"), "COLUMNS": "120"}
    return subprocess.run([sys.executable, "-m", "workhorse.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def _one_document(result: subprocess.CompletedProcess):
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)  # the whole of stdout, not a line of it


@pytest.fixture(scope="module")
def home(tmp_path_factory, tiny_gguf) -> Path:
    home = tmp_path_factory.mktemp("json-home")
    rows = [{"text": f"{text} {suffix}", "label": label} for label, texts in PHRASES.items() for text in texts
            for suffix in ("now", "today", "please", "asap")]
    (home / "data.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return home


def test_models_and_tasks(home, tiny_gguf):
    assert isinstance(_one_document(_workhorse("models", "list", "--json", home=home)), (list, dict))
    assert _one_document(_workhorse("models", "info", str(tiny_gguf), "--json", home=home))["path"] == str(tiny_gguf)
    listed = _one_document(_workhorse("tasks", "list", "--json", home=home))
    assert "support-intents" in json.dumps(listed)


def test_fit_eval_run_and_calls(home, tiny_gguf):
    data = str(home / "data.jsonl")
    fitted = _one_document(_workhorse("fit", data, "--task", "json-intents", "--model", str(tiny_gguf), "--json", home=home))
    assert fitted["task"] == "json-intents" and fitted["version"] == 1
    report = _one_document(_workhorse("eval", "json-intents", data, "--json", "--latency-sample", "2", home=home))
    assert 0 <= report["accuracy"] <= 1
    answers = _workhorse("run", "json-intents", data, home=home)
    assert answers.returncode == 0, answers.stderr[-2000:]
    assert len([json.loads(line) for line in answers.stdout.splitlines()]) == 24  # `run` writes JSON Lines, one per item
    assert _one_document(_workhorse("calls", "stats", "--json", home=home))["total"]["calls"] == 24
    listed = _workhorse("calls", "list", "--json", "--limit", "3", home=home)
    assert [json.loads(line)["task"] for line in listed.stdout.splitlines()] == ["json-intents"] * 3  # JSON Lines


def test_bench_engine(home, tiny_gguf):
    report = _one_document(_workhorse("bench", "engine", "--model", str(tiny_gguf), "--repeats", "1", "--json", home=home))
    assert report["models"]


def test_bench_adversarial(home, tiny_gguf):
    report = _one_document(_workhorse("bench", "adversarial", "--n", "3", "--model", str(tiny_gguf), "--json", home=home))
    assert "routes" in report and "failures" in report
