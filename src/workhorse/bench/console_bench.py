"""`workhorse bench console`: the console's pages over a call log of a million calls.

The log is filled through the call log's own writer (the rollup included), with calls spread
over 30 days: three tasks (classify, extract, logs), two versions, 80 % answered locally, 15 %
escalated, 5 % fallbacks, 1 % of the classify calls corrected. Then each page is requested
`repeat` times through the app in-process (Starlette's TestClient: the server's own routing,
queries and rendering, without a network hop) and its p50 and p95 reported. No model is loaded:
the pages read the log and the task store only."""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from workhorse.calllog.store import CallLog, CallRecord, wait_committed

DAYS = 30
TASKS = (("ticket-intents", 0.6), ("ticket-entities", 0.25), ("app-logs", 0.15))
LABELS = ("refund", "cancel_order", "track_order", "change_address", "payment_issue", "login", "card_blocked", "complaint")
WORDS = ("my order", "the refund", "package", "invoice", "account", "password", "delivery", "card", "address", "payment",
         "was charged twice", "never arrived", "is late", "cannot log in", "please help", "as soon as possible", "thanks")
LOG_TEMPLATES = ("Accepted password for <*> from <*> port <*>", "Failed password for <*> from <*> port <*>",
                 "session opened for user <*>", "Connection closed by <*>", "Invalid user <*> from <*>")
RARE_WORD = "zebra"  # in one input of 10,000: a text search that must look far
ABSENT_WORD = "qwertyx"  # in none: the text search that reads every call
CHUNK = 5_000


def fill(path: Path, calls: int, *, seed: int = 0, log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Write `calls` synthetic calls through the call log's writer; the write rate is reported."""
    rng = random.Random(seed)
    now = time.time()
    start = now - DAYS * 86400
    started = time.perf_counter()
    with CallLog(path) as call_log:
        for first in range(0, calls, CHUNK):
            futures = [call_log.record(_call(rng, start + (first + i) * DAYS * 86400 / calls))
                       for i in range(min(CHUNK, calls - first))]
            wait_committed(futures[-1])
            if (first // CHUNK) % 20 == 0:
                log(f"filled {first + len(futures):,}/{calls:,}")
        with call_log.reading() as connection:  # 1 % of the classify calls get a correction
            ids = [row[0] for row in connection.execute("SELECT id FROM calls WHERE task = 'ticket-intents' AND id % 100 = 0")]
        feedback = [call_log.feedback(call_id, {"label": rng.choice(LABELS)}, by="bench") for call_id in ids]
        wait_committed(feedback[-1]) if feedback else None
    seconds = time.perf_counter() - started
    return {"calls": calls, "corrected": len(ids), "fill_seconds": seconds, "calls_per_s": calls / seconds, "file_mb": path.stat().st_size / 2**20}


def _call(rng: random.Random, created_at: float) -> CallRecord:
    task = rng.choices([name for name, _ in TASKS], [share for _, share in TASKS])[0]
    version = 1 if created_at < time.time() - 10 * 86400 else 2
    confidence = rng.betavariate(5, 1.5)
    escalated = confidence < 0.45 and rng.random() < 0.9
    source = "upstream" if escalated else ("fallback" if rng.random() < 0.05 else "local")
    text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))) + f" #{rng.randint(10_000, 99_999)}"
    if rng.random() < 1e-4:
        text += f" {RARE_WORD}"
    latency = rng.lognormvariate(3.0, 0.6) + (400 if escalated else 0)
    if task == "app-logs":
        template_id = rng.randrange(len(LOG_TEMPLATES))
        output: Any = {"template_id": template_id, "template": LOG_TEMPLATES[template_id], "params": []}
        return CallRecord(task=task, task_version=version, model="qwen2.5-coder-0.5b", input=text, source="local",
                          output=output, final_answer=output, latency_ms=latency, local_cpu_s=latency / 1000,
                          created_at=created_at)
    if task == "ticket-entities":
        output = {"order_id": text.rsplit("#", 1)[-1], "email": None}
        upstream = {"order_id": output["order_id"], "email": None} if escalated else None
    else:
        output = rng.choice(LABELS)
        upstream = (output if rng.random() < 0.7 else rng.choice(LABELS)) if escalated else None
        output_details = {"probabilities": {output: confidence, rng.choice(LABELS): (1 - confidence) / 2}}
    final = upstream if escalated else output
    return CallRecord(
        task=task, task_version=version, model="gemma3-270m", input=text, source=source, output=output,
        confidence=confidence if task == "ticket-intents" else None,
        details=output_details if task == "ticket-intents" else None, latency_ms=latency, local_cpu_s=min(latency, 80) / 1000,
        prompt_tokens=len(text) // 4 + 60, completion_tokens=1 if task == "ticket-intents" else 12,
        escalated=escalated, escalation_reason="low_confidence" if escalated else None,
        upstream_model="gpt-4o-mini" if escalated else None, upstream_request=text if escalated else None,
        upstream_answer=upstream, upstream_prompt_tokens=len(text) // 4 + 180 if escalated else None,
        upstream_completion_tokens=8 if escalated else None, upstream_prompt_estimate=len(text) // 4 + 180,
        final_answer=final, created_at=created_at,
    )


def pages(path: Path, calls: int) -> dict[str, str]:
    """The pages timed, with filters that match many calls, few, or almost none."""
    now = time.time()
    day = lambda days_ago: time.strftime("%Y-%m-%dT%H:%M", time.gmtime(now - days_ago * 86400))  # noqa: E731
    middle = calls // 2
    return {
        "overview 24h": "/ui?range=24h",
        "overview 7d": "/ui?range=7d",
        "overview 30d": "/ui?range=30d",
        "overview all": "/ui?range=all",
        "calls": "/ui/calls",
        "calls, page at the middle": f"/ui/calls?before={middle}",
        "calls by task": "/ui/calls?task=ticket-intents",
        "calls by task and version": "/ui/calls?task=ticket-intents&version=1",
        "calls by source (fallback)": "/ui/calls?source=fallback",
        "calls with feedback": "/ui/calls?task=ticket-intents&feedback=yes",
        "calls by confidence ≤ 0.05": "/ui/calls?task=ticket-intents&max_confidence=0.05",
        "calls in one day, 10 days ago": f"/ui/calls?since={day(10)}&until={day(9)}",
        "calls by common text": "/ui/calls?text=refund",
        f"calls by rare text ({RARE_WORD})": f"/ui/calls?text={RARE_WORD}",
        "calls by text matching none (every call read)": f"/ui/calls?text={ABSENT_WORD}",
        "calls by task and text matching none": f"/ui/calls?task=ticket-intents&text={ABSENT_WORD}",
        "one call": f"/ui/calls/{middle}",
        "review, least confident": "/ui/review/ticket-intents",
        "review, escalated first": "/ui/review/ticket-intents?mode=escalated",
        "review, disagreements": "/ui/review/ticket-intents?mode=disagreement",
        "tasks": "/ui/tasks",
        "log templates": "/ui/templates/app-logs",
    }


def time_pages(path: Path, calls: int, *, repeat: int = 15, log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    from fastapi.testclient import TestClient

    from workhorse.serve.app import create_app
    from workhorse.serve.settings import ServeSettings
    from workhorse.serve.state import ServerState

    settings = ServeSettings(models=["unused"], call_log=str(path), task_reload_s=0)
    state = ServerState(settings)
    state.call_log = CallLog(path)
    results: dict[str, Any] = {}
    try:
        with TestClient(create_app(settings, state=state), base_url="http://127.0.0.1", client=("127.0.0.1", 50000)) as client:
            for name, url in pages(path, calls).items():
                times = []
                for _ in range(repeat + 1):
                    begun = time.perf_counter()
                    response = client.get(url)
                    times.append(1000 * (time.perf_counter() - begun))
                    if response.status_code != 200:
                        raise RuntimeError(f"{url} answered {response.status_code}: {response.text[:200]}")
                times = times[1:]  # the first warms SQLite's page cache
                results[name] = {"url": url, "p50_ms": statistics.median(times),
                                 "p95_ms": statistics.quantiles(times, n=20)[-1], "max_ms": max(times), "bytes": len(response.content)}
                log(f"{name}: p50 {results[name]['p50_ms']:.1f} ms, p95 {results[name]['p95_ms']:.1f} ms")
    finally:
        state.call_log.close()
    return results


def run(path: Path, calls: int, *, repeat: int = 15, refill: bool = False, log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    filled = None
    if refill or not path.exists():
        path.unlink(missing_ok=True)
        filled = fill(path, calls, log=log)
    with CallLog.open_readonly(path) as existing:
        present = existing.count()
    timed = time_pages(path, present, repeat=repeat, log=log)
    worst = max(timed.values(), key=lambda page: page["p95_ms"])
    return {"calls": present, "fill": filled, "repeat": repeat, "pages": timed,
            "worst_p95_ms": worst["p95_ms"], "worst_page": worst["url"], "target_ms": 300}
