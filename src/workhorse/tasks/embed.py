"""The `embed` kind: batched pooled hidden states, optionally truncated and L2-normalised."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from workhorse.engine import EvalRequest, Evaluator
from workhorse.tasks.answer import LocalAnswer
from workhorse.tasks.features import MAX_ITEM_TOKENS
from workhorse.tasks.spec import TaskSpec


class Embedder:
    def __init__(self, spec: TaskSpec, evaluator: Evaluator) -> None:
        self.options = spec.embed
        self.evaluator = evaluator

    def embed(self, texts: Sequence[str], *, token_counts: list[int] | None = None) -> np.ndarray:
        """(len(texts), dim) float32 vectors; `token_counts`, when given, receives each item's length."""
        model = self.evaluator.model
        requests = []
        for text in texts:
            tokens = model.tokenize(text)[: MAX_ITEM_TOKENS + 1] or model.tokenize(" ")
            requests.append(EvalRequest(tokens, pooling=self.options.pooling))
        results = self.evaluator.evaluate(requests)
        if token_counts is not None:
            token_counts.extend(len(request.tokens) for request in requests)
        vectors = np.stack([r.pooled for r in results])  # type: ignore[misc]
        if self.options.dimensions:
            vectors = vectors[:, : self.options.dimensions]
        if self.options.normalize:
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors.astype(np.float32)


class EmbedTask:
    """Answers are vectors (lists of floats), without a confidence."""

    def __init__(self, spec: TaskSpec, directory: Path | None, evaluator: Evaluator) -> None:
        self.spec = spec
        self.embedder = Embedder(spec, evaluator)

    def run(self, texts: Sequence[str]) -> list[LocalAnswer]:
        tokens: list[int] = []
        vectors = self.embedder.embed(texts, token_counts=tokens)
        return [LocalAnswer(vector.tolist(), prompt_tokens=count, completion_tokens=0)
                for vector, count in zip(vectors, tokens, strict=True)]
