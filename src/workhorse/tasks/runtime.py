"""Loading the engine a task runs on."""

from __future__ import annotations

from workhorse.engine import Engine, EngineConfig, LlamaModel
from workhorse.models import resolve


def open_engine(model: str, *, threads: int = 2, n_slots: int = 32, n_ctx: int = 4096) -> Engine:
    """An engine for `model` (a built-in name, .gguf path or hf: reference), assembled if needed."""
    resolved = resolve(model)
    config = EngineConfig(n_ctx=n_ctx, n_threads=threads, n_slots=n_slots, prefix_slots=4)
    return Engine(LlamaModel(resolved.path, name=resolved.name), config)
