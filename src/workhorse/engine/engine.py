"""One llama.cpp context over one model: multi-sequence batches, logits and hidden states at
chosen positions, pooled embeddings, and resident prefix snapshots.

Not thread-safe: exactly one thread owns an `Engine` (see `worker.py` for the thread-safe front).

How the KV cache is used. The context has `n_slots` request sequences and `prefix_slots`
snapshot sequences sharing one unified KV cache. A request with a cacheable prefix gets the
snapshot copied into its slot (`llama_memory_seq_cp` shares the cells, it copies no bytes) and
only its own tokens are evaluated. A request with branches (continuations scored side by side)
takes one slot per branch: its own tokens belong to all of them at once and each branch token to
the branches through it, so one pass evaluates the whole tree and every token is evaluated once.
Every request's slots are emptied when it finishes, so the cache holds nothing but snapshots
between calls.

Hidden states are read from the compute graph as it runs, and batches that ask for no logits
skip the output projection (see `graph_capture.py`).

A LoRA adapter (`EngineConfig.adapter`, see `adapter.py`) is loaded onto the model, once for all
its engines, and applied by this engine's context to everything it evaluates: its prefix
snapshots are computed under it. An engine's adapter never changes, so a model serving tasks
with different adapters has one engine per adapter, all sharing the model's weights.

An encoder (BERT: attention both ways) has no KV cache, so none of the above applies to it: its
requests are evaluated whole, several sequences to a decode (see `encoder.py`).
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

from workhorse.engine import encoder
from workhorse.engine.adapter import Adapter
from workhorse.engine.graph_capture import GraphCapture
from workhorse.engine.model import LlamaModel, _llama
from workhorse.engine.prefix_cache import PrefixCache, PrefixCacheStats, prefix_key
from workhorse.errors import ContextFullError, DecodeError, EngineBusyError, EngineError

if TYPE_CHECKING:
    from workhorse.engine.generation import GenerateRequest, GenerateResult

Pooling = Literal["none", "mean", "last"]
_GGML_TYPES = {"f32": 0, "f16": 1, "q8_0": 8}


@dataclass(frozen=True)
class EngineConfig:
    n_ctx: int = 4096
    n_batch: int = 512
    n_threads: int = 2
    n_slots: int = 16
    prefix_slots: int = 8
    prefix_cache_bytes: int | None = None  # default: the KV bytes of half the context
    # Output rows per llama_decode. llama.cpp keeps n_vocab floats per output row in its compute
    # and output buffers (1 MiB each for a 262k vocabulary) even for rows we only read hidden
    # states from, so this bounds memory; mean pooling, which needs every token as an output,
    # is split into decodes of at most this many tokens.
    max_outputs_per_decode: int = 64
    kv_type: Literal["f16", "f32", "q8_0"] = "f16"
    # Off by default: with a task prefix in the KV cache, plain attention is ~10 % faster than
    # llama.cpp's CPU flash attention, and its results do not depend on which cells hold a sequence.
    flash_attention: Literal["auto", "on", "off"] = "off"
    adapter: Adapter | None = None  # a LoRA adapter applied to everything this engine evaluates

    def __post_init__(self) -> None:
        if self.n_slots < 1 or self.prefix_slots < 0:
            raise ValueError("n_slots must be ≥ 1 and prefix_slots ≥ 0")
        if self.n_slots + self.prefix_slots > 256:
            raise ValueError("llama.cpp supports at most 256 sequences: n_slots + prefix_slots ≤ 256")
        if self.n_batch < 1 or self.n_ctx < self.n_batch:
            raise ValueError("need 1 ≤ n_batch ≤ n_ctx")


@dataclass
class EvalRequest:
    """Evaluate `tokens`; return logits and/or hidden states at the given positions.

    Positions index into `tokens` (negative counts from the end) and must lie after the cached
    prefix. `pooling` pools the hidden states of the tokens after the prefix (the item's own
    tokens): "mean" over them, "last" the final one.
    """

    tokens: Sequence[int]
    prefix_len: int = 0
    logits_at: Sequence[int] = ()
    hidden_at: Sequence[int] = ()
    pooling: Pooling = "none"
    layers: tuple[int, ...] = ()  # intermediate layers whose outputs to return beside the hidden states
    # Continuations of `tokens`, evaluated in the same pass: each sees `tokens` and its own earlier
    # tokens only, and what branches start with alike is evaluated once. Logits come back after
    # `tokens` and after every token of every branch (`EvalResult.branch_logits`): the rows that
    # score each continuation token by token. Each branch takes a sequence slot; with fewer free
    # slots than branches they go in groups, each group evaluating `tokens` again.
    branches: Sequence[Sequence[int]] = ()
    # At every logits position, return the log-probabilities of these tokens instead of the whole
    # row: each row is normalised where llama.cpp left it, so no vocabulary-sized row (1 MiB on
    # Gemma 3) is copied out.
    logprobs_of: Sequence[int] | None = None


@dataclass
class EvalResult:
    logits: np.ndarray | None = None  # (len(logits_at), n_vocab) float32; (…, len(logprobs_of)) float64 with those
    hidden: np.ndarray | None = None  # (len(hidden_at), n_embd) float32
    pooled: np.ndarray | None = None  # (n_embd,) float32
    layer_hidden: dict[int, np.ndarray] = field(default_factory=dict)  # layer → (len(hidden_at), n_embd)
    layer_pooled: dict[int, np.ndarray] = field(default_factory=dict)  # layer → (n_embd,)
    # branch prefix → the logits row after `tokens` and that prefix (`()`: after `tokens` alone)
    branch_logits: dict[tuple[int, ...], np.ndarray] = field(default_factory=dict)
    n_tokens: int = 0
    n_cached: int = 0


@dataclass
class EngineStats:
    decode_calls: int = 0
    tokens_evaluated: int = 0
    tokens_from_cache: int = 0
    decode_seconds: float = 0.0


@dataclass
class OutputSpec:
    """Where one output row of a decode goes."""

    request: int
    position: int
    logits: bool
    hidden: bool
    layers: tuple[int, ...] = ()  # also the outputs of these transformer layers (hidden only)
    branch: tuple[int, ...] | None = None  # the branch prefix it follows (branches share positions)
    logprobs_of: np.ndarray | None = None  # token ids: their log-probabilities instead of the logits row


# A decode entry's sequences: one id, or several for a token that several branches share.
SeqIds = int | tuple[int, ...]


@dataclass(frozen=True)
class _Unit:
    """One request, or one group of its branches when they do not all fit the free slots."""

    index: int
    branches: tuple[tuple[int, ...], ...]
    first: bool  # the unit that returns the request's own outputs

    @property
    def n_slots(self) -> int:
        return max(1, len(self.branches))


@dataclass
class _Pending:
    """A request (or a group of its branches) being fed to the context."""

    index: int
    slots: tuple[int, ...]  # one per branch, else one
    tokens: Sequence[int]
    start: int  # first position to evaluate (after the cached prefix)
    first: bool
    outputs: dict[int, tuple[bool, bool]] = field(default_factory=dict)  # position → (logits, hidden)
    layers: tuple[int, ...] = ()
    nodes: dict[tuple[int, ...], tuple[int, ...]] = field(default_factory=dict)  # branch prefix → slots through it
    logprobs_of: np.ndarray | None = None


def token_logprobs(logits: np.ndarray, token_ids: np.ndarray) -> np.ndarray:
    """log softmax(logits)[token_ids], float64."""
    # float32 is plenty for the exponentials and halves the work on a 262k vocabulary.
    top = logits.max()
    return logits[token_ids] - (top + np.log(np.exp(logits - top).sum(dtype=np.float64)))


class Engine:
    def __init__(self, model: LlamaModel, config: EngineConfig | None = None) -> None:
        self.model = model
        self.config = config or EngineConfig()
        self._llama_cpp = _llama()
        self.stats = EngineStats()
        self._capture = GraphCapture(self._llama_cpp)
        self.is_encoder = model.is_encoder
        adapter = self.config.adapter
        if adapter is not None and self.is_encoder:
            raise EngineError(f"{model.name} is an encoder: LoRA adapters are applied to decoder models only",
                              "open the engine without an adapter")
        handle = model.adapter_handle(adapter) if adapter is not None else None
        with model.setup_lock:
            self._ctx = self._create_context()
            self._memory = self._llama_cpp.llama_get_memory(self._ctx)
            self.n_ctx: int = self._llama_cpp.llama_n_ctx(self._ctx)
            # A token can belong to every request slot at once (the tokens branches share).
            self._batch = self._llama_cpp.llama_batch_init(self.config.n_batch, 0, self.config.n_slots)
            if adapter is not None:
                self._apply_adapter(handle, adapter.scale)
        prefix_ids = range(self.config.n_slots, self.config.n_slots + self.config.prefix_slots)
        self._kv_bytes_per_token: float | None = None
        self._free_slots: list[int] = list(range(self.config.n_slots - 1, -1, -1))
        self.prefix_cache = PrefixCache(prefix_ids, capacity_bytes=self.config.prefix_cache_bytes or 0)

    # -- setup ----------------------------------------------------------------------------
    def _create_context(self):
        llama_cpp = self._llama_cpp
        cfg = self.config
        params = llama_cpp.llama_context_default_params()
        if self.is_encoder:
            return self._create_encoder_context(params)
        params.n_ctx = cfg.n_ctx
        params.n_batch = cfg.n_batch
        params.n_ubatch = cfg.n_batch  # one ubatch per decode keeps output rows in batch order
        # llama.cpp reserves a vocabulary-sized logits row per sequence (1 MiB each for a 262k
        # vocabulary), so slots are not free: keep n_slots + prefix_slots to what is used.
        params.n_seq_max = cfg.n_slots + cfg.prefix_slots
        params.n_outputs_max = cfg.max_outputs_per_decode
        params.n_threads = cfg.n_threads
        params.n_threads_batch = cfg.n_threads
        params.embeddings = False
        params.kv_unified = True  # snapshots are shared by reference across sequences
        params.swa_full = True  # sliding-window layers keep whole prefixes so snapshots stay valid
        params.no_perf = True
        params.type_k = params.type_v = _GGML_TYPES[cfg.kv_type]
        params.flash_attn_type = {"auto": -1, "off": 0, "on": 1}[cfg.flash_attention]

        params.cb_eval = self._capture.callback
        params.cb_eval_user_data = None
        ctx = llama_cpp.llama_init_from_model(self.model.ptr, params)
        if not ctx:
            raise EngineError(
                f"llama.cpp could not create a context for {self.model.name} (n_ctx={cfg.n_ctx})",
                "lower n_ctx or n_slots; the KV cache may not fit in memory",
            )
        return ctx

    def _create_encoder_context(self, params):
        """A context for an encoder: every token's hidden state comes out as llama.cpp's embedding
        (pooling NONE: we pool, see `encoder.py`), and one ubatch takes a whole batch, which a
        non-causal model needs. There is no KV cache to size, share or snapshot, and no graph
        callback: the hidden states are the context's output."""
        cfg = self.config
        params.n_ctx = cfg.n_ctx
        params.n_batch = params.n_ubatch = cfg.n_batch
        params.n_seq_max = cfg.n_slots  # a decode's sequences, each under its own id
        params.n_outputs_max = cfg.n_batch  # every token is an output
        params.n_threads = params.n_threads_batch = cfg.n_threads
        params.embeddings = True
        params.pooling_type = self._llama_cpp.LLAMA_POOLING_TYPE_NONE
        params.no_perf = True
        ctx = self._llama_cpp.llama_init_from_model(self.model.ptr, params)
        if not ctx:
            raise EngineError(f"llama.cpp could not create a context for {self.model.name} (n_batch={cfg.n_batch})",
                              "lower n_batch or n_slots")
        return ctx

    def _apply_adapter(self, handle, scale: float) -> None:
        """Make `handle` this context's one adapter. The context sizes its compute graph again at
        its next decode, reading the model's adapters: one token is decoded here, under the
        model's setup lock, so that this does not happen while another thread loads an adapter."""
        llama_cpp = self._llama_cpp
        adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(handle)
        scales = (ctypes.c_float * 1)(scale)
        llama_cpp.llama_set_adapters_lora(self._ctx, adapters, 1, scales)
        batch = self._batch
        batch.n_tokens = 1
        batch.token[0], batch.pos[0], batch.logits[0] = max(self.model.bos, 0), 0, False
        batch.n_seq_id[0], batch.seq_id[0][0] = 1, 0
        self._capture.arm(hidden=False, logits=False, layers=())
        status = llama_cpp.llama_decode(self._ctx, batch)
        self._capture.arm(hidden=False, logits=True, layers=())
        self.seq_rm(0)
        if status != 0:
            raise DecodeError(f"llama_decode failed with status {status} after applying the LoRA adapter")

    @property
    def adapter(self) -> Adapter | None:
        return self.config.adapter

    def close(self) -> None:
        if getattr(self, "_ctx", None):
            self._llama_cpp.llama_batch_free(self._batch)
            self._llama_cpp.llama_free(self._ctx)
            self._ctx = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    # -- sequence slots -------------------------------------------------------------------
    def acquire_slot(self) -> int | None:
        """A free request sequence with an empty KV, or None when all are busy."""
        if not self._free_slots:
            return None
        slot = self._free_slots.pop()
        self.seq_rm(slot)
        return slot

    def release_slot(self, slot: int) -> None:
        """Free the slot's KV cells and return it to the pool."""
        self.seq_rm(slot)
        self._free_slots.append(slot)

    @property
    def free_slots(self) -> int:
        return len(self._free_slots)

    def tokens_in_use(self) -> int:
        """KV cells held by busy slots and prefix snapshots (shared cells counted once per holder)."""
        if self.is_encoder:
            return 0  # no KV cache: nothing outlives a decode
        busy = set(range(self.config.n_slots)) - set(self._free_slots)
        held = sum(self.seq_pos_max(s) + 1 for s in busy)
        return held + self.prefix_cache.tokens

    # -- KV cache -------------------------------------------------------------------------
    def seq_rm(self, seq_id: int, p0: int = -1, p1: int = -1) -> None:
        self._llama_cpp.llama_memory_seq_rm(self._memory, seq_id, p0, p1)

    def seq_cp(self, src: int, dst: int) -> None:
        self._llama_cpp.llama_memory_seq_cp(self._memory, src, dst, -1, -1)

    def seq_pos_max(self, seq_id: int) -> int:
        """Highest position held for `seq_id`, -1 when the sequence is empty."""
        return self._llama_cpp.llama_memory_seq_pos_max(self._memory, seq_id)

    def state_bytes(self) -> int:
        """Bytes of the context state, which grows with the KV cells in use."""
        return self._llama_cpp.llama_state_get_size(self._ctx)

    def kv_bytes_per_token(self) -> float:
        """KV bytes one token occupies, measured from llama.cpp's own sequence state size."""
        if self.is_encoder:
            return 0.0
        if self._kv_bytes_per_token is None:
            probe = self.acquire_slot()
            if probe is None:
                raise EngineError("no free sequence slot to measure the KV size")
            n = 8
            self.decode([(self.model.bos if self.model.bos >= 0 else 0, p, probe, False) for p in range(n)], [])
            size_n = self._llama_cpp.llama_state_seq_get_size(self._ctx, probe)
            self.seq_rm(probe)
            self.decode([(self.model.bos if self.model.bos >= 0 else 0, 0, probe, False)], [])
            size_1 = self._llama_cpp.llama_state_seq_get_size(self._ctx, probe)
            self.release_slot(probe)
            self._kv_bytes_per_token = (size_n - size_1) / (n - 1)
        return self._kv_bytes_per_token

    def kv_cache_bytes(self) -> int:
        return int(self.kv_bytes_per_token() * self.n_ctx)

    def prefix_stats(self) -> PrefixCacheStats:
        return self.prefix_cache.stats()

    def clear_prefixes(self) -> None:
        for entry in self.prefix_cache.clear():
            self.seq_rm(entry.seq_id)

    def attach_prefix(self, prefix: Sequence[int], slot: int) -> int:
        """Put the KV of `prefix` into `slot`. Returns the number of tokens served from a snapshot
        (0 when the prefix cannot be cached; the caller then evaluates it as ordinary tokens)."""
        if self.config.prefix_slots == 0 or not prefix:
            return 0
        if self.prefix_cache.capacity_bytes == 0:
            self.prefix_cache.capacity_bytes = int(self.kv_bytes_per_token() * (self.n_ctx // 2))
        key = prefix_key(prefix)
        entry = self.prefix_cache.lookup(key)
        if entry is None:
            n_bytes = int(self.kv_bytes_per_token() * len(prefix))
            seq_id, evicted = self.prefix_cache.admit(key, len(prefix), n_bytes)
            for old in evicted:
                self.seq_rm(old.seq_id)
            if seq_id is None:
                return 0
            self.decode([(tok, pos, seq_id, False) for pos, tok in enumerate(prefix)], [])
        else:
            seq_id = entry.seq_id
            self.stats.tokens_from_cache += len(prefix)
        self.seq_cp(seq_id, slot)
        return len(prefix)

    # -- decoding -------------------------------------------------------------------------
    def decode(
        self,
        entries: Sequence[tuple[int, int, SeqIds, bool]],
        outputs: Sequence[OutputSpec],
        consume: Callable[[int, np.ndarray | None, np.ndarray | None], object] | None = None,
    ) -> list[tuple[np.ndarray | None, np.ndarray | None, dict[int, np.ndarray] | None]]:
        """Decode (token, position, seq_ids, wants_output) entries, split at n_batch tokens and
        max_outputs_per_decode outputs. Returns (logits row, hidden row, {layer: row}) per output,
        each None where it was not asked for.

        With `consume`, each output is handed over as `consume(output_index, logits, hidden)`
        right after its decode instead, the logits being a view of llama.cpp's buffer that is
        valid only during the call; sampling this way saves copying a vocabulary-sized row
        per sequence per step. The returned list is then empty."""
        rows: list[tuple[np.ndarray | None, np.ndarray | None, dict[int, np.ndarray] | None]] = []
        n_done = 0
        n_batch = self.config.n_batch
        max_out = self.config.max_outputs_per_decode
        start = 0
        while start < len(entries):
            end, n_out = start, 0
            while end < len(entries) and end - start < n_batch:
                if entries[end][3]:
                    if n_out == max_out:
                        break
                    n_out += 1
                end += 1
            chunk = self._decode_chunk(entries[start:end], outputs[n_done : n_done + n_out], copy=consume is None)
            if consume is None:
                rows.extend(chunk)
            else:
                for i, (logits, hidden, _) in enumerate(chunk):
                    consume(n_done + i, logits, hidden)
            n_done += n_out
            start = end
        return rows

    def _decode_chunk(
        self, entries: Sequence[tuple[int, int, SeqIds, bool]], outputs: Sequence[OutputSpec], *, copy: bool = True
    ) -> list[tuple[np.ndarray | None, np.ndarray | None, dict[int, np.ndarray] | None]]:
        llama_cpp = self._llama_cpp
        batch = self._batch
        for i, (token, pos, seq_ids, wants_output) in enumerate(entries):
            batch.token[i] = token
            batch.pos[i] = pos
            if isinstance(seq_ids, int):
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = seq_ids
            else:
                batch.n_seq_id[i] = len(seq_ids)
                for k, seq_id in enumerate(seq_ids):
                    batch.seq_id[i][k] = seq_id
            batch.logits[i] = wants_output
        batch.n_tokens = len(entries)
        self._capture.arm(
            hidden=any(o.hidden for o in outputs),
            logits=any(o.logits for o in outputs),
            layers=sorted({layer for o in outputs if o.hidden for layer in o.layers}),
        )
        started = time.perf_counter()
        status = llama_cpp.llama_decode(self._ctx, batch)
        self.stats.decode_seconds += time.perf_counter() - started
        self.stats.decode_calls += 1
        self.stats.tokens_evaluated += len(entries)
        if status == 1:  # the cells exist but are taken by other sequences now
            raise EngineBusyError(
                f"no room in the KV cache for {len(entries)} more tokens (n_ctx={self.n_ctx})",
                "raise n_ctx, send fewer or shorter items at once, or lower prefix_cache_bytes",
            )
        if status != 0:
            raise DecodeError(f"llama_decode failed with status {status}")
        hidden, layer_rows = self._capture.collect(len(outputs), len(entries), self.model.architecture, self.model.n_layer)
        rows: list[tuple[np.ndarray | None, np.ndarray | None, dict[int, np.ndarray] | None]] = []
        out_index = 0
        for i, entry in enumerate(entries):
            if not entry[3]:
                continue
            out = outputs[out_index]
            logit_row = None
            if out.logits:
                ptr = llama_cpp.llama_get_logits_ith(self._ctx, i)
                logit_row = np.ctypeslib.as_array(ptr, shape=(self.model.n_vocab,))
                if out.logprobs_of is not None:
                    logit_row = token_logprobs(logit_row, out.logprobs_of)
                elif copy:
                    logit_row = logit_row.copy()
            hidden_row = hidden[out_index] if (hidden is not None and out.hidden) else None
            # Layer outputs hold every token of the batch: index by batch position.
            layer_row = {layer: layer_rows[layer][i] for layer in out.layers} if out.hidden and out.layers else None
            rows.append((logit_row, hidden_row, layer_row))
            out_index += 1
        return rows

    # -- evaluation -----------------------------------------------------------------------
    def evaluate(self, requests: Sequence[EvalRequest]) -> list[EvalResult]:
        """Evaluate many sequences; requests share decodes and cached prefixes."""
        if self.is_encoder:
            return self._evaluate_encoder(requests)
        results: list[EvalResult | None] = [None] * len(requests)
        for req in requests:
            self._check_request(req)
        for wave in self._waves(requests, self._units(requests)):
            self._evaluate_wave(requests, wave, results)
        return results  # type: ignore[return-value]

    def _evaluate_encoder(self, requests: Sequence[EvalRequest]) -> list[EvalResult]:
        limit = min(self.config.n_batch, self.model.n_ctx_train)  # one ubatch; the learned positions
        for req in requests:
            encoder.check_request(req, name=self.model.name, limit=limit)
        results: list[EvalResult] = []
        for indices in encoder.pack(requests, self.config.n_batch, self.config.n_slots):
            sequences = [requests[i].tokens for i in indices]
            n_tokens = encoder.fill_batch(self._batch, sequences)
            started = time.perf_counter()
            status = self._llama_cpp.llama_decode(self._ctx, self._batch)  # llama.cpp encodes: no KV cache
            self.stats.decode_seconds += time.perf_counter() - started
            self.stats.decode_calls += 1
            self.stats.tokens_evaluated += n_tokens
            if status != 0:
                raise DecodeError(f"llama_decode failed with status {status} on the encoder {self.model.name}")
            pointer = self._llama_cpp.llama_get_embeddings(self._ctx)
            hidden = np.ctypeslib.as_array(pointer, shape=(n_tokens, self.model.n_embd)).copy()
            rows = encoder.split_rows(hidden, sequences)
            results.extend(encoder.result(requests[i], own) for i, own in zip(indices, rows))
        return results

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        """Generate for many prompts at once (continuous batching, see `generation.py`)."""
        from workhorse.engine.generation import generate  # generation builds on this module

        return generate(self, requests)

    def _check_request(self, req: EvalRequest) -> None:
        n = len(req.tokens)
        if n == 0:
            raise EngineError("empty token sequence", "send at least one token")
        longest = n + max((len(b) for b in req.branches), default=0)
        if longest > self.n_ctx:
            raise ContextFullError(
                f"{longest} tokens do not fit the context of {self.n_ctx}",
                "shorten the input or raise n_ctx",
            )
        if not 0 <= req.prefix_len < n:
            raise EngineError(
                f"prefix_len {req.prefix_len} must be in [0, {n})", "leave at least one token after the prefix"
            )
        if req.logprobs_of is not None and not all(0 <= t < self.model.n_vocab for t in req.logprobs_of):
            raise EngineError("logprobs_of holds a token id outside the vocabulary", f"use ids in [0, {self.model.n_vocab})")

    def _units(self, requests: Sequence[EvalRequest]) -> list[_Unit]:
        """The requests, those with more branches than there are free slots split into groups
        of branches that fit."""
        group = self.free_slots
        if group == 0:
            raise EngineBusyError("all sequence slots are busy", "wait for running generations to finish")
        units = []
        for i, req in enumerate(requests):
            # An empty branch is `tokens` alone, whose row every request with branches returns.
            branches = [tuple(b) for b in req.branches if b]
            units.append(_Unit(i, tuple(branches[:group]), first=True))
            units += [_Unit(i, tuple(branches[k : k + group]), first=False) for k in range(group, len(branches), group)]
        return units

    def _waves(self, requests: Sequence[EvalRequest], units: Sequence[_Unit]) -> list[list[_Unit]]:
        """Group units so each group fits in the free slots and the free KV cells."""
        budget = self.n_ctx - self.tokens_in_use() - self.config.n_batch
        max_slots = self.free_slots
        waves: list[list[_Unit]] = [[]]
        used = slots = 0
        prefixes: set[str] = set()  # the wave's distinct prefixes: requests sharing one share its cells
        for unit in units:
            req = requests[unit.index]
            key = prefix_key(req.tokens[: req.prefix_len]) if req.prefix_len else ""
            own = len(req.tokens) - req.prefix_len + sum(map(len, unit.branches))
            need = own + (req.prefix_len if key not in prefixes else 0)  # a new prefix snapshot may take cells too
            wave = waves[-1]
            if wave and (slots + unit.n_slots > max_slots or used + need > budget):
                waves.append([])
                used = slots = 0
                prefixes = set()
                need = own + req.prefix_len
            waves[-1].append(unit)
            prefixes.add(key)
            used += need
            slots += unit.n_slots
        return [w for w in waves if w]

    def _evaluate_wave(self, requests: Sequence[EvalRequest], wave: list[_Unit], results: list) -> None:
        pending: list[_Pending] = []
        slots: list[int] = []
        try:
            for unit in wave:
                req = requests[unit.index]
                first = self._take_slot(slots)
                # Before the unit's other slots are taken: a first snapshot measures the KV size in a free one.
                cached = self.attach_prefix(req.tokens[: req.prefix_len], first) if req.prefix_len else 0
                own = (first, *(self._take_slot(slots) for _ in range(unit.n_slots - 1)))
                for slot in own[1:]:
                    self.seq_cp(first, slot)  # shares the prefix's cells
                pending.append(self._plan(unit, own, req, cached))
            entries: list[tuple[int, int, SeqIds, bool]] = []
            outputs: list[OutputSpec] = []
            for k, p in enumerate(pending):
                trunk: SeqIds = p.slots if len(p.slots) > 1 else p.slots[0]
                for pos in range(p.start, len(p.tokens)):
                    wants = p.outputs.get(pos)
                    entries.append((p.tokens[pos], pos, trunk, wants is not None))
                    if wants is not None:
                        layers = p.layers if wants[1] else ()
                        outputs.append(OutputSpec(k, pos, *wants, layers=layers, logprobs_of=p.logprobs_of))
                # Dict order puts each branch prefix after its own prefixes, so every sequence
                # sees its tokens in position order, as llama.cpp requires.
                for node, seq_ids in p.nodes.items():
                    pos = len(p.tokens) + len(node) - 1
                    entries.append((node[-1], pos, seq_ids if len(seq_ids) > 1 else seq_ids[0], True))
                    outputs.append(OutputSpec(k, pos, True, False, branch=node, logprobs_of=p.logprobs_of))
            rows = self.decode(entries, outputs)
            self._collect(requests, pending, outputs, rows, results)
        finally:
            for slot in slots:
                self.release_slot(slot)

    def _take_slot(self, taken: list[int]) -> int:
        slot = self.acquire_slot()
        assert slot is not None  # waves are sized to the free slots
        taken.append(slot)
        return slot

    def _plan(self, unit: _Unit, slots: tuple[int, ...], req: EvalRequest, cached: int) -> _Pending:
        n = len(req.tokens)
        p = _Pending(index=unit.index, slots=slots, tokens=req.tokens, start=cached, first=unit.first, layers=tuple(req.layers),
                     logprobs_of=None if req.logprobs_of is None else np.asarray(req.logprobs_of, dtype=np.intp))
        for branch, slot in zip(unit.branches, slots):  # no branches: one slot, no nodes
            for j in range(1, len(branch) + 1):
                p.nodes[branch[:j]] = p.nodes.get(branch[:j], ()) + (slot,)
        if not unit.first:  # a later group of branches: the request's own outputs came with the first
            return p

        def absolute(pos: int) -> int:
            absolute_pos = pos + n if pos < 0 else pos
            if not cached <= absolute_pos < n:
                raise EngineError(
                    f"position {pos} is outside the evaluated tokens [{cached}, {n})",
                    "ask for outputs after the cached prefix",
                )
            return absolute_pos

        logits_positions = list(req.logits_at) + ([n - 1] if req.branches else [])  # the branches' root row
        for pos in logits_positions:
            a = absolute(pos)
            p.outputs[a] = (True, p.outputs.get(a, (False, False))[1])
        hidden_positions = [absolute(pos) for pos in req.hidden_at]
        first_own = req.prefix_len  # pooling covers the item's own tokens
        if req.pooling == "mean":
            hidden_positions += list(range(first_own, n))
        elif req.pooling == "last":
            hidden_positions.append(n - 1)
        for a in hidden_positions:
            if a < cached:
                raise EngineError(f"position {a} lies in the cached prefix", "pool over tokens after the prefix")
            p.outputs[a] = (p.outputs.get(a, (False, False))[0], True)
        return p

    def _collect(self, requests, pending, outputs, rows, results) -> None:
        by_unit: dict[int, dict[int, tuple]] = {}
        branch_rows: dict[int, dict[tuple[int, ...], np.ndarray]] = {}
        for out, row in zip(outputs, rows):
            if out.branch is None:
                by_unit.setdefault(out.request, {})[out.position] = row
            else:
                branch_rows.setdefault(out.request, {})[out.branch] = row[0]
        for k, p in enumerate(pending):
            if not p.first:  # units come in order: the first one made the result
                results[p.index].branch_logits.update(branch_rows.get(k, {}))
                continue
            req = requests[p.index]
            got = by_unit.get(k, {})
            n = len(req.tokens)
            res = EvalResult(n_tokens=n, n_cached=p.start)
            if req.logits_at:
                res.logits = np.stack([got[pos + n if pos < 0 else pos][0] for pos in req.logits_at])
            if req.hidden_at:
                res.hidden = np.stack([got[pos + n if pos < 0 else pos][1] for pos in req.hidden_at])
            pooled_positions = {"mean": range(req.prefix_len, n), "last": range(n - 1, n)}.get(req.pooling)
            if pooled_positions is not None:
                res.pooled = np.mean([got[pos][1] for pos in pooled_positions], axis=0, dtype=np.float32)
            for layer in req.layers:
                if req.hidden_at:
                    res.layer_hidden[layer] = np.stack([got[pos + n if pos < 0 else pos][2][layer] for pos in req.hidden_at])
                if pooled_positions is not None:
                    res.layer_pooled[layer] = np.mean(
                        [got[pos][2][layer] for pos in pooled_positions], axis=0, dtype=np.float32
                    )
            if req.branches:
                res.branch_logits = {(): got[n - 1][0]} | branch_rows.get(k, {})
            results[p.index] = res
