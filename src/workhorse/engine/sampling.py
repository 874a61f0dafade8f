"""Choosing the next token: greedy, temperature, top-p, a seed, and a hook for constraints.

Sampling runs in numpy on the logits row the engine returns. A `TokenConstraint` (the tasks'
grammar/JSON-schema matcher) masks the row before sampling and is told which token was chosen,
so constrained decoding plugs in without the engine knowing about grammars.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class TokenConstraint(Protocol):
    """What constrained decoding needs from a grammar matcher."""

    def allowed_tokens(self) -> np.ndarray | None:
        """A boolean mask over the vocabulary of tokens allowed next (None: no restriction)."""

    def advance(self, token: int) -> None:
        """The sampler chose `token`; move the matcher past it."""

    def is_finished(self) -> bool:
        """True when the constrained output is complete and generation must stop."""


@runtime_checkable
class FastForwardConstraint(TokenConstraint, Protocol):
    """A constraint that can name the tokens its grammar forces next (a JSON key, a closing
    quote), so generation decodes them in the same step instead of one step each."""

    def forced_tokens(self) -> list[int]:
        """Tokens forced next whatever the model says; the caller passes each to `advance()`."""


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0  # 0 → greedy
    top_p: float = 1.0
    seed: int | None = None
    max_tokens: int = 64
    stop_tokens: frozenset[int] = field(default_factory=frozenset)
    ignore_eos: bool = False  # keep going past end-of-generation tokens (benchmarks)
    # Track the probability of each chosen token (a softmax over the allowed tokens per step,
    # ~0.3 ms on a 262k vocabulary); GenerateResult.confidence is then their geometric mean.
    confidence: bool = False
    # Added to the logits of these tokens before choosing (a prior; OpenAI's logit_bias).
    logit_bias: Mapping[int, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError("temperature must be ≥ 0")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if self.max_tokens < 1:
            raise ValueError("max_tokens must be ≥ 1")


class Sampler:
    """Per-sequence sampler; owns its random generator so a seed makes one sequence reproducible
    regardless of what else is in the batch."""

    def __init__(self, params: SamplingParams, constraint: TokenConstraint | None = None) -> None:
        self.params = params
        self.constraint = constraint
        # Any integer seeds (OpenAI clients send negative ones too); numpy wants a non-negative one.
        self._rng = np.random.default_rng(None if params.seed is None else params.seed % 2**64)
        self.log_probs: list[float] = []  # of chosen tokens where there was a choice (params.confidence)

    def sample(self, logits: np.ndarray) -> int:
        """Choose a token. `logits` may be a view of llama.cpp's buffer: it is never modified."""
        row = logits
        if self.params.logit_bias:
            row = row.copy()
            for token, bias in self.params.logit_bias.items():
                row[token] += bias
        if self.constraint is not None:
            mask = self.constraint.allowed_tokens()
            if mask is not None:
                if not mask.any():
                    raise RuntimeError("the constraint allows no token")
                row = np.where(mask[: row.shape[0]], row, -np.inf)
        if self.params.temperature == 0.0:
            token = int(np.argmax(row))
        else:
            token = self._sample_temperature(row.astype(np.float64))
        if self.params.confidence:
            self._track(row, token)
        if self.constraint is not None:
            self.constraint.advance(token)
        return token

    def _track(self, row: np.ndarray, token: int) -> None:
        finite = row[np.isfinite(row)]
        if finite.size > 1:  # a forced token (the grammar left one choice) says nothing
            top = float(finite.max())
            log_z = top + float(np.log(np.exp(finite.astype(np.float64) - top).sum()))
            self.log_probs.append(float(row[token]) - log_z)

    @property
    def confidence(self) -> float | None:
        if not self.params.confidence:
            return None
        return float(np.exp(np.mean(self.log_probs))) if self.log_probs else 1.0

    def _sample_temperature(self, row: np.ndarray) -> int:
        row = row / self.params.temperature
        row -= row.max()
        probs = np.exp(row)
        probs /= probs.sum()
        if self.params.top_p < 1.0:
            order = np.argsort(-probs)
            cumulative = np.cumsum(probs[order])
            # Keep the smallest set whose mass reaches top_p (always at least one token).
            keep = order[: int(np.searchsorted(cumulative, self.params.top_p) + 1)]
            kept = np.zeros_like(probs)
            kept[keep] = probs[keep]
            probs = kept / kept.sum()
        return int(self._rng.choice(probs.shape[0], p=probs))
