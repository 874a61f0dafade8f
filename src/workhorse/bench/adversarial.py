"""Hostile inputs against a running server: every public route gets generated requests built to
hurt — sizes at and past the limits, runs of separators and digits, unicode that breaks naive
code, control tokens, nested JSON, wrong types, bodies that are not JSON — while a probe asks
`/healthz` every 50 ms. A sound server answers every one with a status below 500 — or 504 when the
request's own deadline passed, which is its contract — within that deadline plus a second, and
stays responsive throughout.

    report = attack("http://127.0.0.1:8080", n_per_route=1000, models=[...], tasks=[...])
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

DEADLINE_MS = 3000
GRACE_S = 1.0  # a request may take its deadline plus this (the answer's own way back)
PROBE_EVERY_S = 0.05
CONTROL_TOKENS = ["<|im_start|>system\n", "<|im_end|>", "<|endoftext|>", "<start_of_turn>model\n", "<end_of_turn>",
                  "<bos>", "<eos>", "</s>", "<s>", "<unk>", "<pad>", "[INST]", "<|eot_id|>"]
NASTY = ["{text}", "%s%n%x", "{{7*7}}", "${jndi:ldap://x/a}", "'; DROP TABLE calls;--", "\\u0000", "<*>", "\u202e",
         "\u200b", "\ufeff", "\ufffd", "\x00", "\x1b[31m", "e\u0301\u0301\u0301", "👩‍👩‍👧‍👦", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "退款", "عربى"]


def hostile_text(rng: random.Random, max_chars: int) -> str:
    """One hostile string: each family stresses something different."""
    k = rng.choice([1, 2, 10, 100, 1000, max_chars // 4, max_chars - 1, max_chars, max_chars + 1])
    family = rng.randrange(9)
    if family == 0:
        return rng.choice(["", " ", "\n", "\t\t", " \n \r\n "])
    if family == 1:
        return rng.choice(":/,;|=.-_ \n\t") * k
    if family == 2:
        return ":".join(str(rng.randrange(10**6)) for _ in range(max(1, k // 4)))[:k]
    if family == 3:
        return "9" * k
    if family == 4:
        return "".join(rng.choice(CONTROL_TOKENS) for _ in range(max(1, k // 12)))
    if family == 5:
        return "".join(rng.choice(NASTY) for _ in range(max(1, k // 4)))
    if family == 6:
        depth = min(k, 5000)
        return "[" * depth + "]" * depth
    if family == 7:
        words = ["refund", "card", "ERROR", "user=alice", "id=42", "/var/log/x", "10.0.0.1:80", "0x7f"]
        return " ".join(rng.choice(words) for _ in range(max(1, k // 6)))
    return "".join(chr(rng.choice([rng.randrange(32, 0x2FF), rng.randrange(0x4E00, 0x9FFF), rng.randrange(0x1F300, 0x1FAFF)]))
                   for _ in range(min(k, 5000)))


@dataclass
class HostileRequest:
    route: str
    method: str
    path: str
    body: bytes | None = None


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8", errors="surrogatepass")


def _nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = {"a": [value]}
    return value


def hostile_requests(rng: random.Random, n_per_route: int, *, models: list[str], tasks: list[str],
                     max_chars: int) -> list[HostileRequest]:
    """`n_per_route` requests for each public route, shuffled together. Most are well-formed with
    hostile text in them (they reach the model); the rest break one rule of their route's shape."""
    text = lambda: hostile_text(rng, max_chars)  # noqa: E731
    broken = lambda: rng.random() < 0.3  # noqa: E731
    raw_bodies = [b"", b"{", b"[" * 100_000, b"\xff\xfe\x00", b'{"input": "\\ud800"}', b'{"model": 1e999}', b"null",
                  b'{"input": ' + b'"x",' * 10 + b"}"]
    out: list[HostileRequest] = []

    def add(route: str, method: str, path: str, body: Any = None) -> None:
        if body is not None and rng.random() < 0.05:
            out.append(HostileRequest(route, method, path, rng.choice(raw_bodies)))
        else:
            out.append(HostileRequest(route, method, path, None if body is None else _json(body)))

    for _ in range(n_per_route):
        model = rng.choice(models) if not broken() else rng.choice(["no-such-model", "", "../../etc/passwd"])
        name = rng.choice(tasks) if not broken() else rng.choice(["nope", "..", "%00"])
        task_body: dict[str, Any] = rng.choice([{"input": text()}, {"inputs": [text() for _ in range(rng.choice([1, 3, 16]))]}])
        if broken():
            task_body = rng.choice([{"input": _nested(rng.choice([5, 50]))}, {"input": rng.choice([5, None, True, [], {}])},
                                    {"inputs": "not a list"}, {"input": "a", "inputs": ["b"]}, {},
                                    {"inputs": [text() for _ in range(300)]}])
        add("tasks", "POST", f"/v1/tasks/{name}", task_body)

        messages = [{"role": "user", "content": text()}]
        if rng.random() < 0.3:
            messages = [{"role": "system", "content": text()}, *messages]
        if broken():
            messages = rng.choice([[], [{"role": "wizard", "content": "x"}], [{"role": "user", "content": 5}],
                                   [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}],
                                   [{"role": "user", "content": text()}] * 50, [{"role": "assistant", "content": text()}]])
        chat: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": rng.choice([1, 8, 32]),
                                "temperature": rng.choice([0, 0.7, 2])}
        if broken():
            chat[rng.choice(["max_tokens", "temperature", "n", "top_p"])] = rng.choice([0, -1, 10**9, "x", 3])
        if rng.random() < 0.3:
            chat["stop"] = rng.choice([['"'], ["}"], [text()[:50]], [""] * 5, "x"])
        if rng.random() < 0.3:
            chat["response_format"] = rng.choice([
                {"type": "json_object"}, {"type": "json_schema", "json_schema": {"schema": _nested(rng.choice([3, 30]))}},
                {"type": "json_schema", "json_schema": {"schema": {"type": "string", "pattern": "(a+)+$"}}},
                {"type": "json_schema", "json_schema": {"schema": {"type": "array", "minItems": 10**6}}}])
        if rng.random() < 0.2:
            chat["tools"] = [{"type": "function", "function": {"name": rng.choice(["f", "g_2"] + (["bad name", ""] if broken() else [])),
                                                               "parameters": _nested(rng.choice([1, 20]))}}]
            chat["tool_choice"] = rng.choice(["auto", "required", "none", {"type": "function", "function": {"name": "zz"}}])
        add("chat", "POST", "/v1/chat/completions", chat)

        prompt: Any = text() if not broken() else rng.choice([[text(), text()], [], 7, None])
        add("completions", "POST", "/v1/completions", {"model": model, "prompt": prompt, "max_tokens": rng.choice([1, 8, 32]),
                                                        **({"echo": True} if broken() else {})})
        embedding: dict[str, Any] = {"model": model, "input": rng.choice([text(), [text() for _ in range(rng.choice([1, 8, 32]))]])}
        if broken():
            embedding |= rng.choice([{"input": []}, {"input": [1, 2]}, {"dimensions": rng.choice([0, 10**6])},
                                     {"encoding_format": "hex"}, {"input": [text() for _ in range(300)]}])
        add("embeddings", "POST", "/v1/embeddings", embedding)

        call_id = rng.choice(["1", "2", "3"]) if not broken() else rng.choice(["0", "-1", "99999999999999999999", "abc", "1.5"])
        if rng.random() < 0.5:
            add("calls", "GET", f"/v1/calls/{call_id}")
        else:
            feedback = rng.choice([{"label": text()[:100]}, {"labels": [text()[:100]]}, {"fields": {"a": text()[:100]}}])
            if broken():
                feedback = rng.choice([{"fields": _nested(50)}, {"label": "a", "fields": {}}, {}, {"label": 5}])
            add("calls", "POST", f"/v1/calls/{call_id}/feedback", feedback)
        add("reads", "GET", rng.choice(["/v1/models", "/v1/tasks", f"/v1/tasks/{name}", "/readyz", "/metrics", "/openapi.json",
                                        "/nope"]))
    rng.shuffle(out)
    return out


@dataclass
class RouteReport:
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)  # the first few, to reproduce
    over_deadline: int = 0
    slowest_s: float = 0.0


async def _send(client: httpx.AsyncClient, request: HostileRequest, report: RouteReport) -> None:
    headers = {"X-Deadline-Ms": str(DEADLINE_MS), "Content-Type": "application/json"}
    started = time.monotonic()
    try:
        response = await client.request(request.method, request.path, content=request.body, headers=headers)
        status = response.status_code
    except httpx.TimeoutException:
        status = 0  # no answer in time at all
    except httpx.TransportError:
        status = -1  # the connection dropped without an answer
    elapsed = time.monotonic() - started
    report.requests += 1
    report.statuses[status] += 1
    report.slowest_s = max(report.slowest_s, elapsed)
    if elapsed > DEADLINE_MS / 1000 + GRACE_S:
        report.over_deadline += 1
    if (status >= 500 and status != 504) or status <= 0:
        if len(report.server_errors) < 5:
            body = (request.body or b"")[:300].decode("utf-8", errors="replace")
            report.server_errors.append(f"{status} {request.method} {request.path} {body}")


def _probe(url: str, stop: Any, out: Any) -> None:
    """Ask /healthz every PROBE_EVERY_S until `stop` is set; send the latencies through `out`. Runs
    in a process of its own, so that the attacker's own work does not delay the probe."""
    latencies = []
    with httpx.Client(base_url=url, timeout=5) as client:
        while not stop.is_set():
            started = time.monotonic()
            try:
                client.get("/healthz")
                latencies.append(time.monotonic() - started)
            except httpx.HTTPError:
                latencies.append(float("inf"))
            time.sleep(PROBE_EVERY_S)
    out.send(latencies)


async def _attack(url: str, requests: list[HostileRequest], concurrency: int) -> dict[str, RouteReport]:
    reports: dict[str, RouteReport] = {}
    timeout = httpx.Timeout(DEADLINE_MS / 1000 + 30)
    limits = httpx.Limits(max_connections=concurrency + 2)
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:
        queue: asyncio.Queue[HostileRequest] = asyncio.Queue()
        for request in requests:
            queue.put_nowait(request)

        async def worker() -> None:
            while not queue.empty():
                request = queue.get_nowait()
                await _send(client, request, reports.setdefault(request.route, RouteReport()))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return reports


def attack(url: str, *, n_per_route: int, models: list[str], tasks: list[str], max_chars: int = 20_000,
           concurrency: int = 8, seed: int = 0) -> dict[str, Any]:
    requests = hostile_requests(random.Random(seed), n_per_route, models=models, tasks=tasks, max_chars=max_chars)
    started = time.monotonic()
    context = multiprocessing.get_context("spawn")
    stop, (receiving, sending) = context.Event(), context.Pipe(duplex=False)
    prober = context.Process(target=_probe, args=(url, stop, sending), daemon=True)
    prober.start()
    try:
        reports = asyncio.run(_attack(url, requests, concurrency))
    finally:
        stop.set()
    latencies = receiving.recv() if receiving.poll(30) else []
    prober.join(30)
    ordered = sorted(latencies)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else None  # noqa: E731
    return {
        "seconds": time.monotonic() - started,
        "requests": len(requests),
        "routes": {name: {"requests": r.requests, "statuses": dict(sorted(r.statuses.items())),
                          "server_errors": r.server_errors, "over_deadline": r.over_deadline,
                          "slowest_s": round(r.slowest_s, 3)} for name, r in sorted(reports.items())},
        "healthz_ms": {"probes": len(ordered), "p50": 1000 * pick(0.5), "p99": 1000 * pick(0.99), "max": 1000 * ordered[-1],
                       "over_100ms": sum(latency > 0.1 for latency in ordered)}
        if ordered else None,
    }


def failures(report: dict[str, Any], *, healthz_limit_ms: float = 100.0) -> list[str]:
    """What the report shows went wrong (empty: the server held)."""
    problems = []
    for name, route in report["routes"].items():
        errors = sum(count for status, count in route["statuses"].items() if (status >= 500 and status != 504) or status <= 0)
        if errors:
            problems.append(f"{name}: {errors} answers of 5xx or none, e.g. {route['server_errors'][:2]}")
        if route["over_deadline"]:
            problems.append(f"{name}: {route['over_deadline']} requests past their deadline + {GRACE_S:g} s "
                            f"(slowest {route['slowest_s']} s)")
    health = report["healthz_ms"]
    if health and health["max"] > healthz_limit_ms:
        problems.append(f"/healthz took up to {health['max']:.0f} ms (p99 {health['p99']:.0f} ms)")
    return problems
