"""`workhorse bench scale`: the same classification job as a plain `workhorse run` and on Ray
(1 actor with both CPUs, 2 actors with one each) on this machine, and the call log's write rate
in SQLite and PostgreSQL under concurrent writers.

Each configuration runs as its own `workhorse run` process over the same file (bitext_cs test
repeated to at least `items` rows, each with its own id), in alternation, `repeat` times; items/s
is the rows over the command's wall time, Ray's start included. Ray's overhead per item is the
difference of the two wall times over the rows. Every configuration's answers are compared with
the plain run's, item for item."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

CONFIGS = {
    "plain": [],
    "ray 1×2": ["--ray", "local", "--actors", "1", "--cpus-per-actor", "2"],
    "ray 2×1": ["--ray", "local", "--actors", "2", "--cpus-per-actor", "1"],
}


def write_items(texts: list[str], items: int, path: Path) -> int:
    """The texts repeated to at least `items` rows, each with its own id."""
    rows = [texts[i % len(texts)] for i in range(max(items, len(texts)))]
    path.write_text("".join(json.dumps({"id": f"q{i}", "text": text}) + "\n" for i, text in enumerate(rows)), encoding="utf-8")
    return len(rows)


def time_runs(task: str, data: Path, *, threads: int, batch: int, repeat: int, workdir: Path,
              log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    rows = sum(1 for _ in data.open(encoding="utf-8"))
    seconds: dict[str, list[float]] = {name: [] for name in CONFIGS}
    answers: dict[str, dict[str, Any]] = {}
    for round_number in range(repeat):
        for name, extra in CONFIGS.items():
            out = workdir / f"{name.replace(' ', '_')}-{round_number}.jsonl"
            command = [sys.executable, "-m", "workhorse.cli", "run", task, str(data), "-o", str(out), "--threads", str(threads),
                       "--batch", str(batch), "--call-log", str(workdir / f"{name.replace(' ', '_')}-{round_number}.db"), *extra]
            started = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
            elapsed = time.perf_counter() - started
            if done.returncode != 0:
                raise RuntimeError(f"{name} failed: {done.stderr[-2000:]}")
            seconds[name].append(elapsed)
            answers[name] = {a["id"]: (a["answer"], a.get("confidence"))
                             for a in map(json.loads, out.read_text(encoding="utf-8").splitlines())}
            log(f"{name}, round {round_number + 1}: {rows / elapsed:.1f} items/s ({elapsed:.1f} s)")
    plain = answers["plain"]
    missing = {name: abs(len(found) - len(plain)) for name, found in answers.items()}
    mismatches = {name: sum(1 for key, (label, _) in plain.items() if found.get(key, (None,))[0] != label) + missing[name]
                  for name, found in answers.items() if name != "plain"}
    # The confidence to the last bit: the same batches give the same arithmetic.
    inexact = {name: sum(1 for key, value in plain.items() if found.get(key) != value) + missing[name]
               for name, found in answers.items() if name != "plain"}
    largest = {name: max((abs((found[key][1] or 0) - (value[1] or 0)) for key, value in plain.items() if key in found), default=0.0)
               for name, found in answers.items() if name != "plain"}
    rates = {name: [rows / s for s in runs] for name, runs in seconds.items()}
    best_ray = max((name for name in CONFIGS if name != "plain"), key=lambda name: statistics.median(rates[name]))
    plain_rate, ray_rate = statistics.median(rates["plain"]), statistics.median(rates[best_ray])
    return {
        "items": rows,
        "repeat": repeat,
        "configs": {name: {"items_per_s": statistics.median(rates[name]), "runs_items_per_s": rates[name],
                           "seconds": seconds[name]} for name in CONFIGS},
        "plain_items_per_s": plain_rate,
        "ray_items_per_s": ray_rate,
        "ray_best_config": best_ray,
        "ratio": ray_rate / plain_rate,
        "ray_overhead_ms_per_item": 1000 * (statistics.median(seconds[best_ray]) - statistics.median(seconds["plain"])) / rows,
        "answers_differing_from_plain": mismatches,
        "confidences_differing_from_plain": inexact,
        "largest_confidence_difference": largest,
    }


def write_rate(target: str, *, writers: int = 8, calls_per_writer: int = 500) -> dict[str, Any]:
    """Calls/s committed by `writers` threads, each with its own log (as separate servers would
    have), each waiting for its call's commit before the next, as a request does."""
    from workhorse.calllog import CallLog, CallRecord
    from workhorse.calllog.store import wait_committed

    logs = [CallLog(target) for _ in range(writers)]
    try:
        barrier = threading.Barrier(writers + 1)

        def write(log: CallLog, worker: int) -> None:
            barrier.wait()
            for i in range(calls_per_writer):
                wait_committed(log.record(CallRecord(task="bench", model="m", input=f"writer {worker} call {i}",
                                                     source="local", output="refund", final_answer="refund",
                                                     confidence=0.9, latency_ms=20.0)))

        threads = [threading.Thread(target=write, args=(log, w)) for w, log in enumerate(logs)]
        for thread in threads:
            thread.start()
        barrier.wait()
        started = time.perf_counter()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
    finally:
        for log in logs:
            log.close()
    total = writers * calls_per_writer
    return {"writers": writers, "calls": total, "seconds": elapsed, "calls_per_s": total / elapsed}


def log_write_rates(postgres_url: str | None, *, writers: int = 8, calls_per_writer: int = 500) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="workhorse-scale-") as scratch:
        rates: dict[str, Any] = {"sqlite": write_rate(str(Path(scratch) / "calls.db"), writers=writers,
                                                      calls_per_writer=calls_per_writer)}
    rates["postgresql"] = (write_rate(postgres_url, writers=writers, calls_per_writer=calls_per_writer)
                           if postgres_url else None)
    return rates


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
