"""The encoder part of `bench serve`: its Zipf query stream and the hit rate read from /metrics."""

from __future__ import annotations

from collections import Counter

from workhorse.bench.encoder_bench import cache_hit_rate, zipf_stream


def test_the_zipf_stream_is_seeded_and_repeats_its_popular_texts():
    stream = zipf_stream(1000, 20_000, s=1.1, seed=0)
    assert stream == zipf_stream(1000, 20_000, s=1.1, seed=0)
    assert stream != zipf_stream(1000, 20_000, s=1.1, seed=1)
    counts = Counter(stream).most_common()
    # Rank 1 carries 1 / H(1000, 1.1) ≈ 18 % of a Zipf(1.1) stream over 1,000 texts; rank 2, 2^-1.1 of that.
    top, second = counts[0][1] / len(stream), counts[1][1] / len(stream)
    assert 0.16 < top < 0.20 and 0.40 < second / top < 0.55
    assert counts[0][0] != 0  # popularity follows a shuffled ranking, not the dataset's order


def test_the_hit_rate_comes_from_the_cache_counters():
    metrics = "\n".join([
        "# TYPE workhorse_embedding_cache_hits_total counter",
        "workhorse_embedding_cache_hits_total 30",
        "workhorse_embedding_cache_misses_total 10",
        "workhorse_embedding_cache_bytes 4096",
    ])
    assert cache_hit_rate(metrics) == 0.75
    assert cache_hit_rate("workhorse_up 1") is None
