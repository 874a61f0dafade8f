"""With the upstream down, every request is still answered (flagged) within the time budget.

Serves a classify task whose escalation mode is `always` with `workhorse serve`, its upstream a
TCP port that accepts connections and never answers (the worst kind of dead), and sends
concurrent requests. Reports how many were answered, how many flagged `escalation_failed`, and
the latency percentiles next to the configured budget: as the clients saw them (`latency_ms`,
each client keeping one connection, so that setting up an HTTP client is not counted) and as
the server measured them from each request's arrival (`server_latency_ms`).

    python benchmarks/upstream_down.py --task bitext-intents --data bitext_cs:test --n 200 --budget 1.0
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import yaml

from workhorse.bench.serve_bench import free_port, server
from workhorse.evals.datasets import load
from workhorse.evals.metrics import latency_summary
from workhorse.tasks.store import load_task


def blackhole() -> tuple[socket.socket, int]:
    """A listening socket whose connections are accepted and then left silent."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(512)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    return server, server.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", default="bitext-intents")
    parser.add_argument("--data", default="bitext_cs:test")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--budget", type=float, default=1.0, help="the upstream timeout_s")
    parser.add_argument("--verbose", action="store_true", help="print each request's latency")
    args = parser.parse_args()

    spec, directory = load_task(args.task)
    hole, hole_port = blackhole()
    escalation = {"mode": "always", "privacy": "redact",
                  "upstream": {"base_url": f"http://127.0.0.1:{hole_port}/v1", "model": "gpt-4o-mini", "api_key_env": None,
                               "timeout_s": args.budget, "retries": 2}}
    work = Path(tempfile.mkdtemp())
    task_file = work / f"{spec.name}.yaml"
    task_file.write_text(yaml.safe_dump(spec.to_yaml_dict() | {"escalation": escalation}, allow_unicode=True))
    for part in directory.glob("*.npz"):  # a file task reads its trained parts beside the file
        (work / part.name).write_bytes(part.read_bytes())
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "workhorse.cli", "serve", "--port", str(port), "--model", spec.model,
               "--task", str(task_file), "--call-log", str(work / "calls.db")]
    try:
        with server(command, url, "/readyz"):
            texts = [ex.text for ex in load(args.data).examples][: args.n]

            local = threading.local()

            def ask(text: str) -> tuple[float, dict]:
                if not hasattr(local, "http"):  # one client per worker, made before its first request is timed
                    local.http = httpx.Client(base_url=url, timeout=60)
                started = time.perf_counter()
                response = local.http.post(f"/v1/tasks/{spec.name}", json={"input": text})
                return time.perf_counter() - started, response.json() if response.status_code == 200 else {"status": response.status_code}

            with ThreadPoolExecutor(args.clients) as pool:
                results = list(pool.map(ask, texts))
    finally:
        hole.close()
    answered = [r for _, r in results if "answer" in r]
    flagged = [r for r in answered if r.get("escalation_failed")]
    if args.verbose:
        for seconds, result in results:
            print(f"{seconds:.2f}s {result.get('escalation_failed')} {result.get('escalation_reason')}", file=sys.stderr)
    print(json.dumps({
        "requests": len(results), "answered": len(answered), "flagged_escalation_failed": len(flagged),
        "budget_s": args.budget, "clients": args.clients, "latency_ms": latency_summary([t for t, _ in results]),
        "server_latency_ms": latency_summary([r["latency_ms"] / 1000 for r in answered]),
    }, indent=2))


if __name__ == "__main__":
    main()
