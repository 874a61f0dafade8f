"""A real escalating run, end to end, and its bill.

Serves TASK (whose escalation policy names an upstream) with `workhorse serve` and a scratch call
log, sends every item of DATA through `POST /v1/tasks/TASK` from concurrent clients, records each
item's reference label as feedback (`POST /v1/calls/{id}/feedback`), and prints what
`workhorse logs stats` prints for that call log: escalation rate, accuracy, and the cost against
sending every call to the large model.

    python benchmarks/escalation_run.py banking77-intents banking77:test --clients 8 \\
        --large-model gpt-4o-mini --prices prices.yaml
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import httpx

from workhorse.bench.load import closed_loop
from workhorse.bench.serve_bench import free_port, server
from workhorse.calllog.prices import PriceTable
from workhorse.calllog.stats import summarise
from workhorse.calllog.store import CallLog
from workhorse.evals.datasets import load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task")
    parser.add_argument("data")
    parser.add_argument("--limit", type=int, help="at most this many rows (a seeded, label-stratified sample)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--deadline-ms", type=float, default=120_000, help="per request (escalations wait on the upstream)")
    parser.add_argument("--large-model", help="price the all-large counterfactual at this model (default: the task's upstream)")
    parser.add_argument("--prices", type=Path, help="a prices.yaml (default: the built-in list prices)")
    parser.add_argument("--call-log", type=Path, help="keep the call log here (default: a scratch file)")
    args = parser.parse_args()

    dataset = load(args.data, limit=args.limit)
    texts = [example.text for example in dataset.examples]
    call_log = args.call_log or Path(tempfile.mkdtemp(prefix="workhorse-escalation-run-")) / "calls.db"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "workhorse.cli", "serve", "--port", str(port), "--threads", str(args.threads),
               "--task", args.task, "--call-log", str(call_log), "--default-deadline-ms", str(args.deadline_ms)]

    def request(i: int) -> tuple[str, dict]:
        return f"/v1/tasks/{args.task}", {"input": texts[i]}

    with server(command, url, "/readyz"):
        print(f"sending {len(texts)} items of {args.data} to {args.task} with {args.clients} clients", file=sys.stderr)
        result = closed_loop(url, request, args.clients, len(texts))
        with httpx.Client(base_url=url, timeout=60) as client:
            for index, answer in result.answers:
                client.post(f"/v1/calls/{answer['call_id']}/feedback", json={"label": dataset.examples[index].label}).raise_for_status()
    load_summary = result.summary()
    log = CallLog(call_log)
    report = summarise(log.iterate(task=args.task), PriceTable.load(args.prices), large_model=args.large_model)
    log.close()
    print(json.dumps({"data": args.data, "call_log": str(call_log), "load": load_summary, "stats": report}, indent=2))


if __name__ == "__main__":
    main()
