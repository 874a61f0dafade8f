"""The embedding cache: least recently used out first within a byte bound, off at 0, one key per
computation (model, adapter, pooling, truncation, dimensions, normalisation, text); and the
`embed` kind through it on the tiny model: a hit costs no evaluation and returns the vector the
miss computed, with its token count."""

from __future__ import annotations

import threading
from dataclasses import replace

import numpy as np
import pytest
from tiny_model import write_tiny_adapter

from workhorse.engine import Adapter, Engine, EngineConfig
from workhorse.tasks.embed import Embedder
from workhorse.tasks.embedding_cache import EmbeddingCache, EmbeddingSpace, entry_bytes
from workhorse.tasks.features import MAX_ITEM_TOKENS
from workhorse.tasks.store import parse_task

SPACE = EmbeddingSpace("tiny:/models/tiny.gguf", "", "mean", None, None, True)
TASK = """
name: vectors
kind: embed
model: {model}
embed: {{dimensions: {dimensions}}}
"""


def _vector(seed: int, dim: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


def _fill(cache: EmbeddingCache, texts: list[str], space: EmbeddingSpace = SPACE) -> list:
    lookup = cache.lookup(space, texts)
    return lookup.complete([_vector(len(t)) for t in lookup.missing], [3] * len(lookup.missing))


def test_the_least_recently_used_vector_goes_first_when_the_bytes_run_out():
    size = entry_bytes("aa", _vector(2))
    assert size > _vector(2).nbytes  # the text and the bookkeeping count too
    cache = EmbeddingCache(2 * size)
    _fill(cache, ["aa", "bb"])
    assert cache.stats().bytes == 2 * size and cache.stats().entries == 2
    assert cache.lookup(SPACE, ["aa"]).missing == []  # "aa" is now the most recently used
    _fill(cache, ["cc"])
    stats = cache.stats()
    assert (stats.entries, stats.bytes, stats.evictions) == (2, 2 * size, 1)
    assert cache.lookup(SPACE, ["aa", "bb", "cc"]).missing == ["bb"]


def test_a_hit_returns_the_stored_vector_and_token_count_read_only():
    cache = EmbeddingCache(1 << 20)
    [first] = _fill(cache, ["query"])
    lookup = cache.lookup(SPACE, ["query"])
    [again] = lookup.complete([], [])
    assert again.vector is first.vector and again.tokens == 3
    with pytest.raises(ValueError):
        again.vector[0] = 1.0  # shared by every answer: nobody may change it
    assert (cache.stats().hits, cache.stats().misses) == (1, 1)


def test_a_text_repeated_within_a_request_is_evaluated_once_and_counted_once():
    cache = EmbeddingCache(1 << 20)
    lookup = cache.lookup(SPACE, ["a", "b", "a", "a"])
    assert lookup.missing == ["a", "b"]
    answered = lookup.complete([_vector(1), _vector(2)], [4, 5])
    assert [e.tokens for e in answered] == [4, 5, 4, 4] and answered[0] is answered[2]
    assert (cache.stats().misses, cache.stats().entries) == (2, 2)


def test_with_no_bytes_the_cache_holds_and_counts_nothing():
    cache = EmbeddingCache(0)
    assert not cache.enabled
    for _ in range(2):
        assert cache.lookup(SPACE, ["a", "a", "b"]).missing == ["a", "b"]  # still once per distinct text
        _fill(cache, ["a", "b"])
    assert cache.stats() == type(cache.stats())(0, 0, 0, 0, 0, 0)


def test_a_vector_larger_than_the_bound_is_not_kept_and_evicts_nothing():
    small = entry_bytes("a", _vector(1))
    cache = EmbeddingCache(small)
    _fill(cache, ["a"])
    lookup = cache.lookup(SPACE, ["long text"])
    lookup.complete([_vector(1, dim=4096)], [9])
    assert cache.stats().entries == 1 and cache.stats().evictions == 0
    assert cache.lookup(SPACE, ["a"]).missing == []


def test_a_text_evaluated_twice_at_once_is_stored_once():
    cache = EmbeddingCache(1 << 20)
    one, two = cache.lookup(SPACE, ["x"]), cache.lookup(SPACE, ["x"])  # two requests miss the same text
    one.complete([_vector(1)], [2])
    two.complete([_vector(1)], [2])
    assert cache.stats().entries == 1 and cache.stats().bytes == entry_bytes("x", _vector(1))


@pytest.mark.parametrize("change", [{"model": "other:/models/other.gguf"}, {"adapter": "ab12@1.0"}, {"pooling": "last"},
                                    {"max_tokens": 385}, {"dimensions": 8}, {"normalize": False}])
def test_every_part_of_the_space_is_part_of_the_key(change):
    cache = EmbeddingCache(1 << 20)
    _fill(cache, ["query"])
    assert cache.lookup(replace(SPACE, **change), ["query"]).missing == ["query"]
    assert cache.lookup(SPACE, ["query"]).missing == []


def test_the_space_names_the_model_file_and_the_adapter_and_a_full_width_cut_is_no_cut(tiny_model, tmp_path):
    adapter = Adapter.from_file(write_tiny_adapter(tmp_path / "lora.gguf")[0])
    plain = EmbeddingSpace.of(tiny_model, None, pooling="mean", max_tokens=None, dimensions=None, normalize=True)
    assert str(tiny_model.path.resolve()) in plain.model and plain.adapter == ""
    assert EmbeddingSpace.of(tiny_model, None, pooling="mean", max_tokens=None, dimensions=tiny_model.n_embd,
                             normalize=True) == plain
    adapted = EmbeddingSpace.of(tiny_model, adapter, pooling="mean", max_tokens=None, dimensions=None, normalize=True)
    assert adapted != plain and adapter.sha256 in adapted.adapter
    rescaled = EmbeddingSpace.of(tiny_model, replace(adapter, scale=0.5), pooling="mean", max_tokens=None,
                                 dimensions=None, normalize=True)
    assert rescaled != adapted


def test_threads_sharing_the_cache_keep_its_books_straight():
    size = entry_bytes("text 00", _vector(7))
    cache = EmbeddingCache(10 * size)

    def work(worker: int) -> None:
        for round_ in range(200):
            _fill(cache, [f"text {(worker * 7 + round_) % 40:02d}"])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = cache.stats()
    assert stats.entries == 10 and stats.bytes == 10 * size and stats.evictions >= 30
    assert stats.hits + stats.misses == 800


# -- the embed kind on the tiny model --------------------------------------------------------------
@pytest.fixture(scope="module")
def engine(tiny_model):
    engine = Engine(tiny_model, EngineConfig(n_ctx=2048, n_batch=256, n_slots=8, prefix_slots=2, n_threads=1))
    yield engine
    engine.close()


def _embedder(engine, tiny_gguf, cache=None, dimensions=16) -> Embedder:
    return Embedder(parse_task(TASK.format(model=tiny_gguf, dimensions=dimensions)), engine, cache=cache)


def test_a_request_with_two_cached_texts_of_five_evaluates_three(engine, tiny_gguf, tiny_model):
    cache = EmbeddingCache(1 << 20)
    embedder = _embedder(engine, tiny_gguf, cache)
    first = embedder.embed(["my card", "login error"])
    texts = ["login error", "refund please", "my card", "card declined today", "where is my parcel"]
    before, counts = engine.stats.tokens_evaluated, []
    vectors = embedder.embed(texts, token_counts=counts)
    evaluated = engine.stats.tokens_evaluated - before
    assert evaluated == sum(len(tiny_model.tokenize(t)) for t in (texts[1], texts[3], texts[4]))
    assert counts == [len(tiny_model.tokenize(t)) for t in texts]  # cached items report their tokens too
    np.testing.assert_array_equal(vectors[0], first[1])  # the very vector computed before
    np.testing.assert_array_equal(vectors[2], first[0])
    uncached = _embedder(engine, tiny_gguf).embed(texts)
    np.testing.assert_allclose(vectors, uncached, atol=1e-5)  # other batches: equal up to rounding
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.entries) == (2, 5, 5)


def test_a_fully_cached_request_evaluates_nothing(engine, tiny_gguf):
    embedder = _embedder(engine, tiny_gguf, EmbeddingCache(1 << 20))
    first = embedder.embed(["alpha", "beta"])
    before = engine.stats.tokens_evaluated
    np.testing.assert_array_equal(embedder.embed(["beta", "alpha", "beta"]), first[[1, 0, 1]])
    assert engine.stats.tokens_evaluated == before


def test_options_and_adapters_do_not_share_vectors(engine, tiny_gguf, tiny_model, tmp_path):
    cache = EmbeddingCache(1 << 20)
    adapter = Adapter.from_file(write_tiny_adapter(tmp_path / "lora.gguf", ("attn_q", "attn_v", "ffn_down"), size=2.0)[0])
    adapted = Engine(tiny_model, replace(engine.config, adapter=adapter))
    try:
        plain = _embedder(engine, tiny_gguf, cache).embed(["my card"])
        short = _embedder(engine, tiny_gguf, cache, dimensions=8).embed(["my card"])
        tuned = _embedder(adapted, tiny_gguf, cache).embed(["my card"])
        tuned_alone = _embedder(adapted, tiny_gguf).embed(["my card"])
    finally:
        adapted.close()
    assert short.shape == (1, 8) and plain.shape == (1, 16)
    assert np.abs(tuned - plain).max() > 0.05  # the adapter's vector, not the plain model's
    np.testing.assert_allclose(tuned, tuned_alone, atol=1e-5)
    assert (cache.stats().misses, cache.stats().hits) == (3, 0)


def test_long_texts_are_cut_as_before(engine, tiny_gguf, tiny_model):
    long = " ".join(["word"] * (MAX_ITEM_TOKENS * 2))
    counts: list[int] = []
    _embedder(engine, tiny_gguf, EmbeddingCache(1 << 20)).embed([long], token_counts=counts)
    assert counts == [MAX_ITEM_TOKENS + 1] and len(tiny_model.tokenize(long)) > MAX_ITEM_TOKENS + 1
