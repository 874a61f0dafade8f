"""Features for classification heads: one forward pass over the item inside a fixed prompt.

The prompt's text before `{text}` is a cached prefix, so each item costs its own tokens plus the
few after `{text}`. The feature vector is the final-norm hidden state of the last token (what
the model is about to say), optionally joined by the mean state over the item's tokens (which
carries more of the item's own content: it helps to tell out-of-scope items apart) and by the
last token's state in intermediate layers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np

from workhorse.engine import EvalRequest, EvalResult, Evaluator, LlamaModel

MAX_ITEM_TOKENS = 384


class FeaturePrompt:
    """The tokens of one item inside the feature prompt: the prompt's fixed head (a cacheable
    prefix), the item's own tokens (at most MAX_ITEM_TOKENS), the prompt's tail. The one home of
    these tokens, so that training (which runs the model elsewhere) sees what the engine sees."""

    def __init__(self, model: LlamaModel, prompt: str) -> None:
        self.model = model
        before, after = prompt.split("{text}")
        self.prefix = model.tokenize(before)
        self._suffix = model.tokenize(after, add_special=False) if after else []

    def tokens(self, text: str) -> list[int]:
        item = self.model.tokenize(text, add_special=False)[:MAX_ITEM_TOKENS]
        tokens = self.prefix + item + self._suffix
        if len(tokens) == len(self.prefix):  # an empty item still needs one token to read
            tokens = tokens + self.model.tokenize(" ", add_special=False)
        return tokens


class FeatureExtractor:
    def __init__(
        self, evaluator: Evaluator, prompt: str, layers: Sequence[int] = (), pooling: Literal["last", "last+mean"] = "last"
    ) -> None:
        self.evaluator = evaluator
        self.layers = tuple(layers)
        self.with_mean = pooling == "last+mean"
        self.prompt = FeaturePrompt(evaluator.model, prompt)
        self.dim = evaluator.model.n_embd * (1 + self.with_mean + len(self.layers))

    def request(self, text: str) -> EvalRequest:
        pooling = "mean" if self.with_mean else "none"  # the mean covers the item and the prompt's tail
        return EvalRequest(self.prompt.tokens(text), prefix_len=len(self.prompt.prefix), hidden_at=[-1], pooling=pooling,
                           layers=self.layers)

    def extract(
        self,
        texts: Sequence[str],
        *,
        batch_size: int = 64,
        progress: Callable[[int], None] | None = None,
        token_counts: list[int] | None = None,
    ) -> np.ndarray:
        """(len(texts), dim) float32 features, computed `batch_size` items per engine call.
        `token_counts`, when given, receives each item's prompt length in tokens."""
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            results = self.evaluator.evaluate([self.request(t) for t in chunk])
            for i, result in enumerate(results):
                out[start + i] = self.vector(result)
            if token_counts is not None:
                token_counts.extend(result.n_tokens for result in results)
            if progress:
                progress(len(chunk))
        return out

    def vector(self, result: EvalResult) -> np.ndarray:
        assert result.hidden is not None
        parts = [result.hidden[0]] + ([result.pooled] if self.with_mean else [])
        parts += [result.layer_hidden[layer][0] for layer in self.layers]
        return np.concatenate(parts) if len(parts) > 1 else parts[0]
