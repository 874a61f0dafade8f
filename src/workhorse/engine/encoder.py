"""Evaluating an encoder (BERT): every sequence whole, several side by side in one decode, no KV cache.

What sets an encoder apart from the decoders the rest of the engine is built around:
- Attention runs both ways, so a token's hidden state depends on the tokens after it. Nothing
  evaluated before can be reused: no prefix snapshots (`prefix_len` is refused), no branches, and
  no generation; each request's tokens are evaluated in full every time.
- llama.cpp gives such a model no KV cache at all (`llama_get_memory` is NULL), and `llama_decode`
  hands the batch to `llama_encode`, which cannot split a non-causal sequence: the whole batch is
  one ubatch (n_ubatch = n_batch), and a sequence must fit in it. So a batch packs whole sequences,
  up to n_batch tokens, each under its own sequence id and unpadded: llama.cpp's attention mask
  keeps sequences apart, and no token is spent on padding.
- Hidden states are what llama.cpp calls embeddings. The context computes them with pooling NONE
  (one row per token, in batch order) and pooling happens here, as for decoders, so "mean" means the
  same everywhere: the mean over the request's tokens, [CLS] and [SEP] included, which is what
  sentence-transformers' mean pooling does over its attention mask. BERT's graph has neither a
  final norm tensor nor a vocabulary projection, so the graph callback that reads decoders' hidden
  states and skips their logits (`graph_capture.py`) has nothing to do and is not installed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from workhorse.errors import ContextFullError, EngineError

if TYPE_CHECKING:
    from workhorse.engine.engine import EvalRequest, EvalResult


def check_request(req: EvalRequest, *, name: str, limit: int) -> None:
    """EngineError for what an encoder cannot do; ContextFullError for a sequence over `limit`
    tokens (one ubatch, and no more than the model's learned positions)."""
    n = len(req.tokens)
    if n == 0:
        raise EngineError("empty token sequence", "send at least one token")
    if n > limit:
        raise ContextFullError(
            f"{n} tokens do not fit {name}: an encoder evaluates a sequence in one piece, at most {limit} tokens",
            "shorten the input (the model's tokenize truncates as the model was trained to)",
        )
    if req.prefix_len or req.branches:
        raise EngineError(f"{name} is an encoder: no cached prefix or branches (its tokens attend both ways)",
                          "send each item's tokens whole, with prefix_len=0 and no branches")
    if req.logits_at or req.logprobs_of is not None:
        raise EngineError(f"{name} is an encoder without a vocabulary head: it has no logits",
                          "ask for hidden states (hidden_at) or a pooled vector (pooling)")
    if req.layers:
        raise EngineError(f"{name} is an encoder: intermediate layers are not read from it", "use the final hidden states")
    if not all(-n <= pos < n for pos in req.hidden_at):
        raise EngineError(f"hidden_at {list(req.hidden_at)} reaches outside the {n} tokens", f"ask for positions in [-{n}, {n})")


def pack(requests: Sequence[EvalRequest], n_batch: int, n_seqs: int) -> list[list[int]]:
    """Request indices in batches of at most `n_batch` tokens and `n_seqs` sequences, in order."""
    batches: list[list[int]] = []
    tokens = n_seqs_used = 0
    for i, req in enumerate(requests):
        n = len(req.tokens)
        if not batches or tokens + n > n_batch or n_seqs_used == n_seqs:
            batches.append([])
            tokens = n_seqs_used = 0
        batches[-1].append(i)
        tokens += n
        n_seqs_used += 1
    return batches


def fill_batch(batch, sequences: Sequence[Sequence[int]]) -> int:
    """Write `sequences` into a `llama_batch`, sequence k under id k, every token an output;
    returns the number of tokens."""
    i = 0
    for seq_id, tokens in enumerate(sequences):
        for pos, token in enumerate(tokens):
            batch.token[i], batch.pos[i], batch.logits[i] = token, pos, True
            batch.n_seq_id[i], batch.seq_id[i][0] = 1, seq_id
            i += 1
    batch.n_tokens = i
    return i


def split_rows(hidden: np.ndarray, sequences: Sequence[Sequence[int]]) -> list[np.ndarray]:
    """The decode's hidden rows (batch order) cut into each sequence's (n, n_embd)."""
    bounds = np.cumsum([0, *map(len, sequences)])
    return [hidden[start:end] for start, end in zip(bounds[:-1], bounds[1:])]


def result(req: EvalRequest, hidden: np.ndarray) -> EvalResult:
    """What `req` asked for, from its tokens' hidden states."""
    from workhorse.engine.engine import EvalResult  # the engine module imports this one

    n = len(req.tokens)
    out = EvalResult(n_tokens=n, n_cached=0)
    if req.hidden_at:
        out.hidden = hidden[[pos + n if pos < 0 else pos for pos in req.hidden_at]]
    if req.pooling == "mean":
        out.pooled = hidden.mean(axis=0, dtype=np.float32)
    elif req.pooling == "last":
        out.pooled = hidden[-1].copy()
    return out
