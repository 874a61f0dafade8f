"""Prefix snapshots: LRU by bytes over a fixed pool of sequence ids, and their KV is really freed."""

from __future__ import annotations

from workhorse.engine import Engine, EngineConfig, EvalRequest
from workhorse.engine.prefix_cache import PrefixCache, prefix_key


def test_keys_depend_on_every_token_and_the_length():
    assert prefix_key([1, 2, 3]) == prefix_key([1, 2, 3])
    assert prefix_key([1, 2, 3]) != prefix_key([1, 2, 4])
    assert prefix_key([1, 2]) != prefix_key([1, 2, 0])


def test_lru_evicts_oldest_until_bytes_fit():
    cache = PrefixCache(seq_ids=[10, 11, 12], capacity_bytes=300)
    a, _ = cache.admit("a", 10, 100)
    b, _ = cache.admit("b", 10, 100)
    assert cache.lookup("a") is not None  # a is now the most recent
    c, evicted = cache.admit("c", 20, 200)  # needs 200: b (least recent) must go
    assert [e.key for e in evicted] == ["b"] and c == b
    assert cache.lookup("b") is None
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.evictions, stats.bytes) == (1, 1, 1, 300)


def test_lru_evicts_when_slots_run_out_and_refuses_oversized():
    cache = PrefixCache(seq_ids=[5], capacity_bytes=10_000)
    cache.admit("a", 1, 10)
    seq, evicted = cache.admit("b", 1, 10)
    assert seq == 5 and [e.key for e in evicted] == ["a"]
    assert cache.admit("huge", 1, 20_000) == (None, [])


def test_engine_frees_the_kv_of_evicted_snapshots(tiny_model):
    engine = Engine(tiny_model, EngineConfig(n_ctx=1024, n_batch=128, n_slots=2, prefix_slots=2))
    try:
        prefixes = [tiny_model.tokenize(f"instructions number {i} for the task") for i in range(3)]
        for p in prefixes:
            engine.evaluate([EvalRequest(p + [7, 8], prefix_len=len(p), logits_at=[-1])])
        resident = {e.seq_id for e in engine.prefix_cache.entries()}
        assert len(resident) == 2 and engine.prefix_stats().evictions == 1
        for seq_id in range(engine.config.n_slots, engine.config.n_slots + engine.config.prefix_slots):
            assert (engine.seq_pos_max(seq_id) >= 0) == (seq_id in resident)
        # The evicted prefix (the first) is a miss again; the newest is a hit.
        before = engine.prefix_stats()
        engine.evaluate([EvalRequest(prefixes[2] + [9], prefix_len=len(prefixes[2]), logits_at=[-1])])
        engine.evaluate([EvalRequest(prefixes[0] + [9], prefix_len=len(prefixes[0]), logits_at=[-1])])
        after = engine.prefix_stats()
        assert (after.hits - before.hits, after.misses - before.misses) == (1, 1)
        engine.clear_prefixes()
        assert all(engine.seq_pos_max(s) == -1 for s in range(4))
    finally:
        engine.close()
