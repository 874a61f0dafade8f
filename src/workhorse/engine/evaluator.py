"""What the layers above the engine talk to: an `Engine` (one thread, in process) or an
`EngineWorker` (its thread-safe front) — both evaluate and generate the same way."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from workhorse.engine.adapter import Adapter
    from workhorse.engine.engine import EvalRequest, EvalResult
    from workhorse.engine.generation import GenerateRequest, GenerateResult
    from workhorse.engine.model import LlamaModel


class Evaluator(Protocol):
    model: LlamaModel

    @property
    def adapter(self) -> Adapter | None: ...  # the LoRA adapter applied to everything evaluated

    def evaluate(self, requests: Sequence[EvalRequest]) -> list[EvalResult]: ...

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]: ...
