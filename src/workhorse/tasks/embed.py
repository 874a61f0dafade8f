"""`embed` tasks: batched pooled hidden states, optionally truncated and L2-normalised."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from workhorse.engine import EvalRequest
from workhorse.tasks.features import MAX_ITEM_TOKENS, Evaluator
from workhorse.tasks.spec import TaskSpec


class Embedder:
    def __init__(self, spec: TaskSpec, evaluator: Evaluator) -> None:
        self.options = spec.embed
        self.evaluator = evaluator

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        model = self.evaluator.model
        requests = []
        for text in texts:
            tokens = model.tokenize(text)[: MAX_ITEM_TOKENS + 1] or model.tokenize(" ")
            requests.append(EvalRequest(tokens, pooling=self.options.pooling))
        vectors = np.stack([r.pooled for r in self.evaluator.evaluate(requests)])  # type: ignore[misc]
        if self.options.dimensions:
            vectors = vectors[:, : self.options.dimensions]
        if self.options.normalize:
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors.astype(np.float32)
