"""A bounded HTTP load generator: closed loops of concurrent clients, or open-loop arrivals at a
fixed rate, recording each request's latency and status."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from workhorse.evals.metrics import latency_summary

# (path, JSON body, what to check the answer with) for the i-th request
RequestFactory = Callable[[int], tuple[str, dict[str, Any]]]


@dataclass
class LoadResult:
    concurrency: int | None
    rate_per_s: float | None
    sent: int
    wall_s: float
    latencies_s: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    answers: list[tuple[int, Any]] = field(default_factory=list)  # (request index, JSON of a 200)

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0)

    @property
    def throughput(self) -> float:
        return self.ok / self.wall_s if self.wall_s else 0.0

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"sent": self.sent, "ok": self.ok, "requests_per_s": self.throughput}
        if self.concurrency is not None:
            out["concurrency"] = self.concurrency
        if self.rate_per_s is not None:
            out["offered_per_s"] = self.rate_per_s
        out["statuses"] = {str(k): v for k, v in sorted(self.statuses.items())}
        out["latency_ms"] = latency_summary(self.latencies_s) if self.latencies_s else None
        return out


async def _one(client: httpx.AsyncClient, index: int, make: RequestFactory, result: LoadResult) -> None:
    path, body = make(index)
    started = time.perf_counter()
    try:
        response = await client.post(path, json=body)
        status = response.status_code
        if status == 200:
            result.answers.append((index, response.json()))
    except httpx.HTTPError:
        status = 0  # connection-level failure
    result.latencies_s.append(time.perf_counter() - started)
    result.statuses[status] = result.statuses.get(status, 0) + 1


async def _closed_loop(base_url: str, make: RequestFactory, concurrency: int, total: int, headers: dict) -> LoadResult:
    result = LoadResult(concurrency, None, total, 0.0)
    counter = iter(range(total))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=600, limits=limits, headers=headers) as client:

        async def client_loop() -> None:
            for index in counter:
                await _one(client, index, make, result)

        started = time.perf_counter()
        await asyncio.gather(*(client_loop() for _ in range(concurrency)))
        result.wall_s = time.perf_counter() - started
    return result


async def _open_loop(base_url: str, make: RequestFactory, rate: float, duration_s: float, headers: dict, seed: int) -> LoadResult:
    """Poisson arrivals at `rate` per second for `duration_s`, whatever the server's speed."""
    rng = random.Random(seed)
    result = LoadResult(None, rate, 0, 0.0)
    # No cap on connections: past saturation hundreds of requests are in flight, and requests
    # waiting for a pooled connection cost httpx more CPU than the server (measured: 4× at 300).
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=base_url, timeout=600, headers=headers, limits=limits) as client:
        tasks = []
        started = time.perf_counter()
        at = 0.0
        index = 0
        while at < duration_s:
            delay = started + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(_one(client, index, make, result)))
            index += 1
            at += rng.expovariate(rate)
        await asyncio.gather(*tasks)
        result.wall_s = time.perf_counter() - started
        result.sent = index
    return result


def closed_loop(base_url: str, make: RequestFactory, concurrency: int, total: int, headers: dict | None = None) -> LoadResult:
    return asyncio.run(_closed_loop(base_url, make, concurrency, total, headers or {}))


def open_loop(base_url: str, make: RequestFactory, rate: float, duration_s: float, *, headers: dict | None = None,
              seed: int = 0) -> LoadResult:
    return asyncio.run(_open_loop(base_url, make, rate, duration_s, headers or {}, seed))


def sweep(base_url: str, make: RequestFactory, levels: Sequence[int], per_level: int) -> list[LoadResult]:
    """Closed loops at rising concurrency, `per_level × concurrency` requests each (at least `per_level`)."""
    return [closed_loop(base_url, make, c, max(per_level, per_level * c // 2)) for c in levels]
