"""The English encoder's part of `workhorse bench serve`: `/v1/embeddings` on a dedicated
sentence encoder, workhorse against llama_cpp.server serving the same GGUF, and the embedding
cache under a query stream that repeats as search traffic does.

- cold: the cache off, short texts (≤ 32 tokens) cycled; throughput at rising concurrency, the
  baseline at 8 clients (its better of 1 and `--threads` threads), then the open-loop p99 at half
  of workhorse's saturation;
- a Zipf stream (s = 1.1 over a dataset's texts, seeded): the same closed and open loops on a
  server with the cache on, beside the same stream with the cache off, with the hit rate the
  cache reached (read from `/metrics`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from workhorse.bench.load import closed_loop, open_loop
from workhorse.bench.serve_bench import (
    free_port,
    llama_server_command,
    metric_value,
    server,
    side_summary,
    workhorse_serve_command,
)

ZIPF_S = 1.1
CACHE_MB = 256


def zipf_stream(n_texts: int, length: int, *, s: float = ZIPF_S, seed: int = 0) -> list[int]:
    """`length` text indices drawn with probability ∝ 1 / rank^s over a seeded random ranking of
    the `n_texts` texts (so that popularity does not follow the dataset's order)."""
    rng = np.random.default_rng(seed)
    ranking = rng.permutation(n_texts)
    weights = 1.0 / np.arange(1, n_texts + 1) ** s
    return ranking[rng.choice(n_texts, size=length, p=weights / weights.sum())].tolist()


def cache_hit_rate(metrics: str) -> float | None:
    """Hits over lookups, from `/metrics`' embedding cache counters."""
    hits = metric_value(metrics, "workhorse_embedding_cache_hits_total") or 0.0
    looked_up = hits + (metric_value(metrics, "workhorse_embedding_cache_misses_total") or 0.0)
    return hits / looked_up if looked_up else None


def run_encoder(model: str, *, short_texts: Sequence[str], stream_texts: Sequence[str], levels: Sequence[int], clients: int,
                requests: int, half_load_seconds: float, threads: int, log: Callable[[str], None]) -> dict[str, Any]:
    """The `embeddings_encoder` part of the report (see the module's docstring). `model`: a model
    name workhorse resolves; the baseline serves the same file."""
    from workhorse.models import resolve

    model_path = str(resolve(model).path)

    def workhorse(port: int, cache_mb: int) -> list[str]:
        return workhorse_serve_command(port, threads, "--model", model, "--embedding-cache-mb", str(cache_mb))

    def cycled(name: str) -> Callable[[int], tuple[str, dict]]:
        return lambda i: ("/v1/embeddings", {"model": name, "input": short_texts[i % len(short_texts)], "encoding_format": "float"})

    order = zipf_stream(len(stream_texts), 100_000)

    def zipf(i: int) -> tuple[str, dict]:
        return "/v1/embeddings", {"model": model, "input": stream_texts[order[i % len(order)]], "encoding_format": "float"}

    out: dict[str, Any] = {"model": model}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log(f"workhorse serve: embeddings on {model}, cache off")
    with server(workhorse(port, 0), url, "/readyz"):
        closed_loop(url, cycled(model), 4, 16)  # warm-up
        sweep = []
        for level in levels:
            result = closed_loop(url, cycled(model), level, max(requests, requests * level // 2))
            sweep.append(side_summary(result))
            log(f"  encoder   c={level:>2}: {result.throughput:6.1f} req/s")
        saturation = max(side["requests_per_s"] for side in sweep)
        half = open_loop(url, cycled(model), saturation / 2, half_load_seconds)
        log(f"  encoder at half load ({saturation / 2:.1f} req/s): p99 {half.summary()['latency_ms']['p99']:.1f} ms")
        zipf_cold = closed_loop(url, zipf, clients, max(requests, requests * clients // 2))
        zipf_cold_half = open_loop(url, zipf, saturation / 2, half_load_seconds)
    at = list(levels).index(clients) if clients in levels else -1
    out["workhorse"] = sweep[at] | {"sweep": sweep, "saturation_per_s": saturation}
    out["p99_ms_at_half_load"] = half.summary()["latency_ms"]["p99"]
    out["half_load"] = half.summary()

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log(f"workhorse serve: embeddings on {model}, cache on ({CACHE_MB} MB), Zipf s={ZIPF_S} over {len(stream_texts)} texts")
    with server(workhorse(port, CACHE_MB), url, "/readyz"):
        zipf_warm = closed_loop(url, zipf, clients, max(requests, requests * clients // 2))
        zipf_warm_half = open_loop(url, zipf, saturation / 2, half_load_seconds, seed=1)
        hit_rate = cache_hit_rate(httpx.get(url + "/metrics").text)
    log(f"  cache on  c={clients}: {zipf_warm.throughput:6.1f} req/s (cache off {zipf_cold.throughput:.1f}), hit rate "
        f"{100 * (hit_rate or 0):.0f} %, p99 at {saturation / 2:.1f} req/s: {zipf_warm_half.summary()['latency_ms']['p99']:.1f} ms "
        f"(cache off {zipf_cold_half.summary()['latency_ms']['p99']:.1f} ms)")
    out["zipf"] = {
        "s": ZIPF_S, "texts": len(stream_texts), "offered_per_s": saturation / 2,
        "cache_off": {"requests_per_s": zipf_cold.throughput, "p99_ms_at_half_load": zipf_cold_half.summary()["latency_ms"]["p99"],
                      "hit_rate": 0.0},
        "cache_on": {"requests_per_s": zipf_warm.throughput, "p99_ms_at_half_load": zipf_warm_half.summary()["latency_ms"]["p99"],
                     "hit_rate": hit_rate, "cache_mb": CACHE_MB},
    }

    # The baseline at 1 thread and at `threads`, its better run kept: workhorse runs an encoder on
    # one thread (serve's encoder_threads), and the comparison should not turn on that choice.
    alias = Path(model_path).stem
    runs = []
    for baseline_threads in sorted({1, threads}):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log(f"llama_cpp.server: embeddings on {model}, {baseline_threads} thread(s)")
        with server(llama_server_command(model_path, port, baseline_threads, "--embedding", "true"), url, "/v1/models"):
            closed_loop(url, cycled(alias), 2, 8)
            result = closed_loop(url, cycled(alias), clients, max(requests, requests * clients // 2))
            log(f"  encoder   c={clients}: {result.throughput:6.1f} req/s")
        runs.append((result.throughput, baseline_threads, result))
    _, best_threads, baseline = max(runs, key=lambda run: run[0])
    out["baseline"] = side_summary(baseline) | {"model": model, "server": "llama_cpp.server", "threads": best_threads,
                                               "requests_per_s_by_threads": {str(t): r for r, t, _ in runs}}
    out["speedup"] = out["workhorse"]["requests_per_s"] / max(baseline.throughput, 1e-9)
    return out
