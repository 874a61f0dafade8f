"""End to end: `workhorse run` over a file with a task whose policy escalates, against a real
OpenAI-compatible upstream — a second workhorse server on loopback, answering under the task's
answer schema. Every item lands in the call log with its source; `workhorse calls stats` sees them."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_serve import LiveServer

from workhorse.calllog import CallLog
from workhorse.paths import call_log_path
from workhorse.serve.app import create_app
from workhorse.serve.settings import ServeSettings
from workhorse.serve.state import ServerState

# Long tickets escalate (the `max_input_chars` rule), short ones stay local: which items go
# upstream does not depend on what a random-weight model happens to be sure of.
TASK = """
name: routed-intents
kind: classify
model: {model}
instructions: Classify the support ticket.
labels: [{{name: refund}}, {{name: login}}, {{name: card}}]
escalation:
  mode: threshold
  threshold: 0.0
  max_input_chars: 30
  upstream: {{base_url: "{url}/v1", model: {upstream_model}, api_key_env: null, timeout_s: 60, retries: 1}}
"""
SHORT = ["refund please", "cannot login", "card blocked"]
LONG = ["my card was charged twice for one order, refund me", "I cannot log in since the password reset yesterday"]


@pytest.fixture(scope="module")
def upstream(tiny_gguf) -> Iterator[tuple[str, str]]:
    settings = ServeSettings(models=[str(tiny_gguf)], tasks=[], threads=1, n_slots=4, log_calls=False)
    state = ServerState(settings)
    state.load()
    try:
        with LiveServer(create_app(settings, state=state)) as live:
            yield live.url, next(iter(state.models))
    finally:
        asyncio.run(state.close())


def _workhorse(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workhorse.cli", *args], capture_output=True, text=True, timeout=300)


def test_run_escalates_what_the_policy_selects_and_logs_every_item(upstream, tiny_gguf, tmp_path: Path):
    url, upstream_model = upstream
    task = tmp_path / "routed-intents.yaml"
    task.write_text(TASK.format(model=tiny_gguf, url=url, upstream_model=upstream_model))
    data = tmp_path / "tickets.jsonl"
    texts = [SHORT[0], LONG[0], SHORT[1], LONG[1], SHORT[2]]
    data.write_text("".join(json.dumps({"id": f"t{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    out = tmp_path / "answers.jsonl"

    result = _workhorse("run", str(task), str(data), "-o", str(out), "--batch", "2")
    assert result.returncode == 0, result.stderr
    answers = {a["id"]: a for a in map(json.loads, out.read_text().splitlines())}
    for i, text in enumerate(texts):
        answer = answers[f"t{i}"]
        expected = "upstream" if text in LONG else "local"
        assert answer["source"] == expected, answer
        assert answer["answer"] in ("refund", "login", "card")
        assert (answer.get("escalation_reason") == "long_input") == (text in LONG)
    assert "5 answered" in result.stderr and "2 escalated" in result.stderr and "3 local, 2 upstream" in result.stderr

    log = CallLog(call_log_path())
    calls = {c["input"]: c for c in log.iterate()}
    log.close()
    assert set(calls) == set(texts)
    assert {c["id"] for c in calls.values()} == {a["call_id"] for a in answers.values()}
    for text, call in calls.items():
        assert call["source"] == ("upstream" if text in LONG else "local")
        assert call["escalated"] == (text in LONG) and call["task"] == "routed-intents"
        assert call["prompt_tokens"] > 0 and call["completion_tokens"] == 0
        if text in LONG:
            assert call["upstream_model"] == upstream_model and call["upstream_prompt_tokens"] > 0
            assert call["upstream_answer"] == call["final_answer"]

    stats = _workhorse("calls", "stats", "--json")
    assert stats.returncode == 0, stats.stderr
    routed = json.loads(stats.stdout)["tasks"]["routed-intents"]
    assert routed["calls"] == 5 and routed["escalated"] == 2 and routed["sources"] == {"local": 3, "upstream": 2}

    # --no-escalate and --no-log: everything local, nothing more in the log.
    again = _workhorse("run", str(task), str(data), "--no-escalate", "--no-log")
    assert again.returncode == 0, again.stderr
    assert {json.loads(line)["source"] for line in again.stdout.splitlines()} == {"local"}
    log = CallLog(call_log_path())
    assert log.count() == 5
    log.close()


def test_eval_escalate_asks_a_real_upstream_through_the_pipeline(upstream, tiny_gguf, tmp_path: Path):
    url, upstream_model = upstream
    before = _chat_requests(url)
    rows = [{"text": f"{word} request number {i}", "label": word} for i in range(12) for word in ("refund", "login")]
    data = tmp_path / "labelled.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    fitted = _workhorse("fit", str(data), "--task", "eval-intents", "--model", str(tiny_gguf))
    assert fitted.returncode == 0, fitted.stderr
    result = _workhorse("eval", "eval-intents", str(data), "--json", "--latency-sample", "2", "--escalate",
                        "--upstream-url", url + "/v1", "--upstream-model", upstream_model, "--max-rate", "0.25")
    assert result.returncode == 0, result.stderr
    curve = json.loads(result.stdout)["escalation_curve"]
    real = [point for point in curve if point["upstream"] == upstream_model]
    assert len(real) == 6 and real[0]["escalation_rate"] == 0.0 and real[-1]["escalation_rate"] == pytest.approx(0.25, abs=0.03)
    assert all(0.0 <= p["accuracy"] <= 1.0 for p in real)
    assert _chat_requests(url) - before == 6  # the least confident quarter of 24 items, asked for real


def _chat_requests(url: str) -> float:
    """Chat completions the upstream server answered with 200, from its Prometheus counter."""
    import httpx

    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith("workhorse_requests_total") and '"/v1/chat/completions"' in line and 'status="200"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0
