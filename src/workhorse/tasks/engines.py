"""The engine a task runs on: one factory for its configuration, used by the CLI, the server and
the benchmarks, so that the same task gets the same context everywhere.

A task version runs on its model with its LoRA adapter, if it has one (`adapter.gguf` in the
version's directory, see `adapter_of`); engines are therefore chosen by (model, adapter), and
engines of one model with different adapters share the model's weights.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from workhorse.engine import Adapter, Engine, EngineConfig, Evaluator, LlamaModel
from workhorse.errors import TaskError
from workhorse.logparse.model import CONTEXT_TOKENS as LOGS_CONTEXT_TOKENS
from workhorse.models import resolve
from workhorse.tasks.spec import TaskKind, TaskSpec
from workhorse.tasks.store import ADAPTER_FILE

DEFAULT_CONTEXT = 4096
DEFAULT_SLOTS = 32
# Snapshot sequences for cached prefixes: one per task served on the model is plenty; a server
# holds a few tasks per model, a batch job one.
PREFIX_SLOTS = 8
# KV cells a kind needs at least: a logs task shows the model demonstrations and similar templates.
CONTEXT_BY_KIND: dict[TaskKind, int] = {"logs": LOGS_CONTEXT_TOKENS}


def adapter_of(directory: Path | None) -> Adapter | None:
    """The LoRA adapter a task version runs with: `adapter.gguf` in its directory, else none."""
    if directory is None or not (directory / ADAPTER_FILE).is_file():
        return None
    return Adapter.from_file(directory / ADAPTER_FILE)


def check_adapter(spec: TaskSpec, directory: Path | None, evaluator: Evaluator) -> None:
    """TaskError unless `evaluator` applies exactly the adapter of the task version in `directory`:
    a version's trained parts (a head) were fitted on features made with it."""
    wanted, applied = adapter_of(directory), evaluator.adapter
    if wanted != applied:
        has = f"the LoRA adapter {applied.path}" if applied else "no LoRA adapter"
        needs = f"its adapter {wanted.path}" if wanted else "none"
        raise TaskError(f"task {spec.name} v{spec.version} needs {needs}, but its engine applies {has}",
                        "open the engine with tasks.engines.open_task_engine(spec, directory)")


def engine_config(
    *, threads: int = 2, n_ctx: int | None = None, n_slots: int = DEFAULT_SLOTS, kinds: Iterable[TaskKind] = (),
    adapter: Adapter | None = None,
) -> EngineConfig:
    """An engine's settings for tasks of these kinds: the context is the larger of `n_ctx` (default
    4,096) and what the kinds need."""
    needed = max((CONTEXT_BY_KIND.get(kind, 0) for kind in kinds), default=0)
    return EngineConfig(n_ctx=max(n_ctx or DEFAULT_CONTEXT, needed), n_threads=threads, n_slots=n_slots,
                        prefix_slots=PREFIX_SLOTS, adapter=adapter)


def open_engine(model: str, config: EngineConfig | None = None) -> Engine:
    """An in-process engine for `model` (a built-in name, .gguf path or hf: reference), assembled if
    needed, with the adapter of `config` if it has one."""
    resolved = resolve(model)
    return Engine(LlamaModel(resolved.path, name=resolved.name), config or engine_config())


def open_task_engine(spec: TaskSpec, directory: Path | None, *, threads: int = 2) -> Engine:
    """The engine a task version answers on: its model, with its adapter if it has one."""
    return open_engine(spec.model, engine_config(threads=threads, kinds=[spec.kind], adapter=adapter_of(directory)))


class TaskEngines:
    """In-process engines for several task versions (a candidate and the incumbent it must beat):
    one per (model, adapter), each model loaded once and shared by its engines."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self._models: dict[Path, LlamaModel] = {}
        self._engines: dict[tuple[Path, Adapter | None], Engine] = {}

    def get(self, model: str, adapter: Adapter | None) -> Engine:
        resolved = resolve(model)
        path = resolved.path
        if (path, adapter) not in self._engines:
            if path not in self._models:
                self._models[path] = LlamaModel(path, name=resolved.name)
            self._engines[path, adapter] = Engine(self._models[path], replace(self.config, adapter=adapter))
        return self._engines[path, adapter]

    def for_task(self, spec: TaskSpec, directory: Path | None) -> Engine:
        return self.get(spec.model, adapter_of(directory))

    def close(self) -> None:
        for engine in self._engines.values():
            engine.close()
        self._engines.clear()

    def __enter__(self) -> TaskEngines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

