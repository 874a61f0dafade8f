"""Bookkeeping for prefix snapshots: which token prefixes are resident in the KV cache, in which
sequence slot, and which to evict.

A snapshot is a KV sequence that holds an evaluated prefix (a task's instructions, label list,
examples). Requests copy it into their own sequence (`llama_memory_seq_cp`, which shares cells
rather than copying bytes) and evaluate only their own tokens. The cache is keyed by a hash of
the prefix tokens and bounded both by bytes of KV and by the number of slots reserved for it;
the least recently used snapshot goes first.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass


def prefix_key(tokens: Sequence[int]) -> str:
    """A stable hash of a token sequence (collisions would serve the wrong prefix, so no Python hash())."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(len(tokens).to_bytes(4, "little"))
    digest.update(b"".join(int(t).to_bytes(4, "little", signed=True) for t in tokens))
    return digest.hexdigest()


@dataclass
class PrefixEntry:
    key: str
    seq_id: int
    n_tokens: int
    n_bytes: int
    hits: int = 0


@dataclass(frozen=True)
class PrefixCacheStats:
    entries: int
    bytes: int
    capacity_bytes: int
    hits: int
    misses: int
    evictions: int

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def as_dict(self) -> dict[str, float]:
        return {**self.__dict__, "hit_rate": self.hit_rate}


class PrefixCache:
    """LRU of resident prefixes over a fixed pool of sequence ids."""

    def __init__(self, seq_ids: Sequence[int], capacity_bytes: int) -> None:
        self._free_seq_ids = list(seq_ids)
        self._entries: OrderedDict[str, PrefixEntry] = OrderedDict()
        self.capacity_bytes = capacity_bytes
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def lookup(self, key: str) -> PrefixEntry | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        entry.hits += 1
        self.hits += 1
        return entry

    def admit(self, key: str, n_tokens: int, n_bytes: int) -> tuple[int | None, list[PrefixEntry]]:
        """Reserve a slot for a new prefix. Returns (seq_id or None when it can never fit, evicted
        entries whose KV the caller must free)."""
        if n_bytes > self.capacity_bytes or (not self._free_seq_ids and not self._entries):
            return None, []
        evicted: list[PrefixEntry] = []
        while self._entries and (not self._free_seq_ids or self.bytes + n_bytes > self.capacity_bytes):
            _, old = self._entries.popitem(last=False)
            self._free_seq_ids.append(old.seq_id)
            evicted.append(old)
            self.evictions += 1
        seq_id = self._free_seq_ids.pop()
        self._entries[key] = PrefixEntry(key=key, seq_id=seq_id, n_tokens=n_tokens, n_bytes=n_bytes)
        return seq_id, evicted

    def clear(self) -> list[PrefixEntry]:
        dropped = list(self._entries.values())
        for entry in dropped:
            self._free_seq_ids.append(entry.seq_id)
        self._entries.clear()
        return dropped

    @property
    def bytes(self) -> int:
        return sum(e.n_bytes for e in self._entries.values())

    @property
    def tokens(self) -> int:
        """KV cells the resident snapshots hold."""
        return sum(e.n_tokens for e in self._entries.values())

    def entries(self) -> list[PrefixEntry]:
        return list(self._entries.values())

    def stats(self) -> PrefixCacheStats:
        return PrefixCacheStats(
            entries=len(self._entries),
            bytes=self.bytes,
            capacity_bytes=self.capacity_bytes,
            hits=self.hits,
            misses=self.misses,
            evictions=self.evictions,
        )
