"""Prometheus metrics of one server (a registry per app, so tests can run several).

Tokens per second are `rate(workhorse_engine_tokens_total[1m])`; the prefix-cache hit rate and
the engine counters are read from the engines when scraped, the embedding cache's from the cache."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from workhorse.tasks.embedding_cache import CacheStats

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("workhorse_requests", "HTTP requests answered", ["route", "status"], registry=r)
        self.latency = Histogram(
            "workhorse_request_seconds", "Request latency", ["route", "model", "task"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.queue_depth = Gauge("workhorse_queue_depth", "Requests in flight per model", ["model"], registry=r)
        self.rejected = Counter("workhorse_rejected", "Requests refused with 429 (queue full)", ["model"], registry=r)
        self.deadline_missed = Counter("workhorse_deadline_missed", "Requests answered 504", ["route"], registry=r)
        self.batch_size = Histogram("workhorse_batch_size", "Items per task batch", ["task"], buckets=BATCH_BUCKETS, registry=r)
        self.tokens = Counter("workhorse_tokens", "Tokens processed", ["model", "kind"], registry=r)

    def watch_engines(self, read: Callable[[], Iterable[EngineReading]]) -> None:
        """Report each engine's prefix-cache hit rate and work done, read when scraped."""
        self.registry.register(_EngineCollector(read))

    def watch_embedding_cache(self, read: Callable[[], CacheStats]) -> None:
        """Report the embedding cache's hits, misses, evictions and size, read when scraped."""
        self.registry.register(_EmbeddingCacheCollector(read))


@dataclass(frozen=True)
class EngineReading:
    model: str
    prefix_hit_rate: float
    tokens_evaluated: int
    decode_seconds: float


class _EngineCollector(Collector):
    def __init__(self, read: Callable[[], Iterable[EngineReading]]) -> None:
        self._read = read

    def collect(self):
        hit_rate = GaugeMetricFamily("workhorse_prefix_cache_hit_rate", "Prefix-cache hit rate", labels=["model"])
        tokens = CounterMetricFamily("workhorse_engine_tokens", "Tokens run through llama_decode", labels=["model"])
        seconds = CounterMetricFamily("workhorse_engine_decode_seconds", "Time inside llama_decode", labels=["model"])
        for reading in self._read():
            hit_rate.add_metric([reading.model], reading.prefix_hit_rate)
            tokens.add_metric([reading.model], reading.tokens_evaluated)
            seconds.add_metric([reading.model], reading.decode_seconds)
        yield from (hit_rate, tokens, seconds)

    def describe(self):
        return []


class _EmbeddingCacheCollector(Collector):
    def __init__(self, read: Callable[[], CacheStats]) -> None:
        self._read = read

    def collect(self):
        stats = self._read()
        prefix = "workhorse_embedding_cache"
        yield CounterMetricFamily(f"{prefix}_hits", "Texts answered from the embedding cache", value=stats.hits)
        yield CounterMetricFamily(f"{prefix}_misses", "Texts evaluated because the cache lacked them", value=stats.misses)
        yield CounterMetricFamily(f"{prefix}_evictions", "Vectors dropped to stay within the bound", value=stats.evictions)
        yield GaugeMetricFamily(f"{prefix}_bytes", "Bytes the cached vectors take (texts and bookkeeping included)",
                                value=stats.bytes)
        yield GaugeMetricFamily(f"{prefix}_entries", "Vectors in the embedding cache", value=stats.entries)
        yield GaugeMetricFamily(f"{prefix}_capacity_bytes", "The bound (0: the cache is off)", value=stats.capacity_bytes)

    def describe(self):
        return []
