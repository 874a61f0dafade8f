"""The engine a task runs on: one factory for its configuration, used by the CLI, the server and
the benchmarks, so that the same task gets the same context everywhere."""

from __future__ import annotations

from collections.abc import Iterable

from workhorse.engine import Engine, EngineConfig, LlamaModel
from workhorse.logparse.model import CONTEXT_TOKENS as LOGS_CONTEXT_TOKENS
from workhorse.models import resolve
from workhorse.tasks.spec import TaskKind

DEFAULT_CONTEXT = 4096
DEFAULT_SLOTS = 32
# Snapshot sequences for cached prefixes: one per task served on the model is plenty; a server
# holds a few tasks per model, a batch job one.
PREFIX_SLOTS = 8
# KV cells a kind needs at least: a logs task shows the model demonstrations and similar templates.
CONTEXT_BY_KIND: dict[TaskKind, int] = {"logs": LOGS_CONTEXT_TOKENS}


def engine_config(
    *, threads: int = 2, n_ctx: int | None = None, n_slots: int = DEFAULT_SLOTS, kinds: Iterable[TaskKind] = ()
) -> EngineConfig:
    """An engine's settings for tasks of these kinds: the context is the larger of `n_ctx` (default
    4,096) and what the kinds need."""
    needed = max((CONTEXT_BY_KIND.get(kind, 0) for kind in kinds), default=0)
    return EngineConfig(n_ctx=max(n_ctx or DEFAULT_CONTEXT, needed), n_threads=threads, n_slots=n_slots,
                        prefix_slots=PREFIX_SLOTS)


def open_engine(model: str, config: EngineConfig | None = None) -> Engine:
    """An in-process engine for `model` (a built-in name, .gguf path or hf: reference), assembled if needed."""
    resolved = resolve(model)
    return Engine(LlamaModel(resolved.path, name=resolved.name), config or engine_config())
