"""A cache of embedding vectors: search traffic repeats its queries, and a repeated text should
cost a lookup, not a forward pass.

    lookup = cache.lookup(space, texts)          # hits found, the other texts once each
    vectors, tokens = evaluate(lookup.missing)   # the caller's engine work, one batch
    embeddings = lookup.complete(vectors, tokens)  # one per text, in order; the misses now cached

One cache serves a whole process (the server's `/v1/embeddings` and its `embed` tasks), bounded in
bytes and evicting the least recently used vector first. An entry is keyed by its text and its
`EmbeddingSpace`: everything else that decides the vector (the model, the LoRA adapter, pooling,
truncation, dimensions, normalisation). A task version with another adapter or other options
therefore never sees another's vectors, while versions that compute the same vectors share them.
Each entry keeps the text's token count too, so usage is reported alike for hits and misses.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from workhorse.engine import Adapter, LlamaModel

# What an entry costs besides its vector's data and its text: the dictionary slot and its order
# link, the key tuple, the entry object and the array's header (≈300 bytes measured with
# tracemalloc on CPython 3.12), with room for a space object an entry does not share.
ENTRY_OVERHEAD = 400


@dataclass(frozen=True, slots=True)
class EmbeddingSpace:
    """Everything besides the text that decides a vector. Build it with `of`, which fills in the
    identities and writes equal computations alike (a cut at the model's full width is no cut)."""

    model: str  # the model's name and file
    adapter: str  # the LoRA adapter's SHA-256 and scale; "" for none
    pooling: str
    max_tokens: int | None  # the text's tokens are cut after this many (None: never cut)
    dimensions: int | None  # the vector is cut to this many (None: the model's width)
    normalize: bool

    @classmethod
    def of(cls, model: LlamaModel, adapter: Adapter | None, *, pooling: str, max_tokens: int | None,
           dimensions: int | None, normalize: bool) -> EmbeddingSpace:
        cut = dimensions if dimensions is not None and dimensions < model.n_embd else None
        lora = f"{adapter.sha256}@{adapter.scale}" if adapter is not None else ""
        return cls(f"{model.name}:{model.path.resolve()}", lora, pooling, max_tokens, cut, normalize)


@dataclass(frozen=True, slots=True)
class Embedding:
    vector: np.ndarray  # float32, read-only: shared by every answer that uses it
    tokens: int  # the text's tokens as evaluated: its usage, whether it was cached or not


@dataclass(frozen=True)
class CacheStats:
    hits: int  # distinct texts of a request answered from the cache
    misses: int  # distinct texts of a request evaluated (while the cache is on)
    evictions: int  # entries dropped to stay within the bound
    bytes: int
    entries: int
    capacity_bytes: int  # 0: the cache is off


class EmbeddingCache:
    """Thread-safe: the server's event loop and the task batches' threads share it. With
    `max_bytes` 0 it holds nothing and counts nothing; lookups still evaluate a text that
    appears twice in one request once."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be 0 (off) or more, got {max_bytes}")
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[EmbeddingSpace, str], Embedding] = OrderedDict()  # least recent first
        self._sizes: dict[tuple[EmbeddingSpace, str], int] = {}
        self._bytes = 0
        self._hits = self._misses = self._evictions = 0
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def lookup(self, space: EmbeddingSpace, texts: Sequence[str]) -> Lookup:
        """What the cache holds for `texts`, and the distinct texts it lacks, in first-seen order."""
        distinct = list(dict.fromkeys(texts))
        found: dict[str, Embedding] = {}
        if self.enabled:
            with self._lock:
                for text in distinct:
                    entry = self._entries.get((space, text))
                    if entry is not None:
                        self._entries.move_to_end((space, text))
                        found[text] = entry
                self._hits += len(found)
                self._misses += len(distinct) - len(found)
        return Lookup(self, space, list(texts), found, [text for text in distinct if text not in found])

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self._hits, self._misses, self._evictions, self._bytes, len(self._entries), self.max_bytes)

    def _insert(self, space: EmbeddingSpace, fresh: dict[str, Embedding]) -> None:
        if not self.enabled:
            return
        with self._lock:
            for text, entry in fresh.items():
                key = (space, text)
                size = entry_bytes(text, entry.vector)
                if size > self.max_bytes:
                    continue  # it would evict everything and still not fit
                # Another request may have evaluated the same text meanwhile: replaced, not counted twice.
                self._bytes += size - self._sizes.get(key, 0)
                self._entries[key] = entry
                self._entries.move_to_end(key)
                self._sizes[key] = size
                while self._bytes > self.max_bytes:
                    oldest, _ = self._entries.popitem(last=False)
                    self._bytes -= self._sizes.pop(oldest)
                    self._evictions += 1


class Lookup:
    """One request's view of the cache: `missing` lists the texts to evaluate; `complete` takes
    their vectors (already pooled, cut and normalised as the space says) and answers every text."""

    def __init__(self, cache: EmbeddingCache, space: EmbeddingSpace, texts: list[str], found: dict[str, Embedding],
                 missing: list[str]) -> None:
        self._cache = cache
        self.space = space
        self.texts = texts
        self.found = found
        self.missing = missing

    def complete(self, vectors: np.ndarray | Sequence[np.ndarray], tokens: Sequence[int]) -> list[Embedding]:
        if not len(vectors) == len(tokens) == len(self.missing):
            raise ValueError(f"{len(self.missing)} texts were missing, got {len(vectors)} vectors and {len(tokens)} counts")
        fresh = {text: _entry(vector, count) for text, vector, count in zip(self.missing, vectors, tokens, strict=True)}
        self._cache._insert(self.space, fresh)
        every = self.found | fresh
        return [every[text] for text in self.texts]


def entry_bytes(text: str, vector: np.ndarray) -> int:
    """What one entry counts against the bound."""
    return vector.nbytes + sys.getsizeof(text) + ENTRY_OVERHEAD


def _entry(vector: np.ndarray, tokens: int) -> Embedding:
    # A copy of its own: a row of a batch's array would keep the whole batch alive past its eviction.
    owned = np.array(vector, dtype=np.float32, copy=True)
    owned.setflags(write=False)
    return Embedding(owned, int(tokens))
