"""The `embed` kind: batched pooled hidden states, optionally truncated and L2-normalised. With an
`EmbeddingCache`, a text it holds is answered without evaluating it (see tasks/embedding_cache.py)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from workhorse.engine import EvalRequest, Evaluator
from workhorse.tasks.answer import LocalAnswer
from workhorse.tasks.embedding_cache import EmbeddingCache, EmbeddingSpace
from workhorse.tasks.features import MAX_ITEM_TOKENS
from workhorse.tasks.spec import TaskSpec


class Embedder:
    def __init__(self, spec: TaskSpec, evaluator: Evaluator, *, cache: EmbeddingCache | None = None) -> None:
        self.options = spec.embed
        self.evaluator = evaluator
        self.cache = cache if cache is not None else EmbeddingCache(0)  # off: still one evaluation per distinct text
        self.space = EmbeddingSpace.of(evaluator.model, evaluator.adapter, pooling=self.options.pooling,
                                       max_tokens=MAX_ITEM_TOKENS + 1, dimensions=self.options.dimensions,
                                       normalize=self.options.normalize)

    def embed(self, texts: Sequence[str], *, token_counts: list[int] | None = None) -> np.ndarray:
        """(len(texts), dim) float32 vectors; `token_counts`, when given, receives each item's length
        (a cached item's too: the tokens it was evaluated with)."""
        lookup = self.cache.lookup(self.space, texts)
        counts: list[int] = []
        vectors = self._evaluate(lookup.missing, counts) if lookup.missing else []
        embeddings = lookup.complete(vectors, counts)
        if token_counts is not None:
            token_counts.extend(e.tokens for e in embeddings)
        if not embeddings:
            return np.empty((0, self.options.dimensions or self.evaluator.model.n_embd), np.float32)
        return np.stack([e.vector for e in embeddings])

    def _evaluate(self, texts: Sequence[str], token_counts: list[int]) -> np.ndarray:
        model = self.evaluator.model
        requests = []
        for text in texts:
            tokens = model.tokenize(text)[: self.space.max_tokens] or model.tokenize(" ")
            requests.append(EvalRequest(tokens, pooling=self.options.pooling))
        results = self.evaluator.evaluate(requests)
        token_counts.extend(len(request.tokens) for request in requests)
        vectors = np.stack([r.pooled for r in results])  # type: ignore[misc]
        if self.options.dimensions:
            vectors = vectors[:, : self.options.dimensions]
        if self.options.normalize:
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors.astype(np.float32)


class EmbedTask:
    """Answers are vectors (lists of floats), without a confidence."""

    def __init__(self, spec: TaskSpec, directory: Path | None, evaluator: Evaluator, *,
                 cache: EmbeddingCache | None = None) -> None:
        self.spec = spec
        self.embedder = Embedder(spec, evaluator, cache=cache)

    def run(self, texts: Sequence[str]) -> list[LocalAnswer]:
        tokens: list[int] = []
        vectors = self.embedder.embed(texts, token_counts=tokens)
        return [LocalAnswer(vector.tolist(), prompt_tokens=count, completion_tokens=0)
                for vector, count in zip(vectors, tokens, strict=True)]
