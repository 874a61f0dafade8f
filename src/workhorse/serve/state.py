"""What a running server holds: one engine thread per model, the tasks served on them, and the
admission count that turns a full queue into 429.

A task version with a LoRA adapter runs on an engine of its own for its (model, adapter): a
second llama.cpp context on the same loaded weights, opened when the first task needs it and
closed when the last task using it is gone. Contexts are not switched between adapters: a switch
would discard the prefix snapshots computed under the other adapter (docs/engine.md, "LoRA
adapters"). All engines of a model share its queue limit: they share its cores."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

from workhorse.calllog import CallLog, Retention
from workhorse.engine import Adapter, EngineWorker, JsonSchemaConstraint, LlamaModel
from workhorse.errors import TaskError, TaskNotFoundError, UnknownModelError, WorkhorseError
from workhorse.pipeline import Pipeline, build_pipeline
from workhorse.serve.batching import TaskBatcher
from workhorse.serve.errors import ApiError
from workhorse.serve.metrics import EngineReading, Metrics
from workhorse.serve.settings import ServeSettings
from workhorse.tasks.embedding_cache import EmbeddingCache
from workhorse.tasks.engines import adapter_of, engine_config
from workhorse.tasks.spec import TaskSpec

log = logging.getLogger("workhorse.serve")

RETRY_AFTER_S = 1
METRICS_WAIT_S = 0.5  # a scrape does not wait longer than this for an engine busy with a batch
# A replaced task version is closed after this long without work; longer than a request waits for
# admission, so one that took the old version just before the swap is not left without it.
RETIRE_IDLE_S = 30.0


@dataclass
class _AdaptedEngine:
    worker: EngineWorker
    users: int = 0


@dataclass
class ServedModel:
    name: str
    worker: EngineWorker  # the model as it is: the OpenAI routes, and the tasks without an adapter
    limit: int
    in_flight: int = 0
    adapted: dict[Adapter, _AdaptedEngine] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def engine_for(self, adapter: Adapter | None) -> EngineWorker:
        """The engine for a task with `adapter` (the model's own for none). An adapter's engine
        shares the model's weights; it opens on first use and stays while a task holds it (see
        `release`). EngineError, with its fix, for an adapter that does not fit the model."""
        if adapter is None:
            return self.worker
        with self._lock:
            entry = self.adapted.get(adapter)
            if entry is not None:
                entry.users += 1
                return entry.worker
        # Opened outside the lock (it takes a while), which metrics readings and releases also take.
        worker = EngineWorker(self.worker.model, replace(self.worker.config, adapter=adapter))
        with self._lock:
            entry = self.adapted.get(adapter)
            spare = worker if entry is not None else None  # another task opened one meanwhile
            if entry is None:
                entry = self.adapted[adapter] = _AdaptedEngine(worker)
            entry.users += 1
        if spare is not None:
            spare.close()
        else:
            log.info("%s: opened an engine for the LoRA adapter %s", self.name, adapter.path)
        return entry.worker

    def release(self, adapter: Adapter | None) -> None:
        """A task no longer uses the engine for `adapter`; the last one to leave closes it."""
        if adapter is None:
            return
        with self._lock:
            entry = self.adapted[adapter]
            entry.users -= 1
            if entry.users:
                return
            del self.adapted[adapter]
        entry.worker.close()
        log.info("%s: closed the engine for the LoRA adapter %s", self.name, adapter.path)

    def engines(self) -> list[tuple[str, EngineWorker]]:
        """Every open engine of the model, with the name metrics report it under."""
        with self._lock:
            adapted = [(f"{self.name}+{adapter.short_name}", entry.worker) for adapter, entry in self.adapted.items()]
        return [(self.name, self.worker), *adapted]

    def close(self) -> None:
        with self._lock:
            adapted, self.adapted = list(self.adapted.values()), {}
        for entry in adapted:
            entry.worker.close()
        self.worker.close()

    def check_room(self, metrics: Metrics) -> None:
        """429 when the queue is full (streams check before their 200 goes out)."""
        if self.in_flight >= self.limit:
            raise self.refuse(metrics, f"{self.name} has {self.in_flight} requests in flight (limit {self.limit})")

    def refuse(self, metrics: Metrics, why: str) -> ApiError:
        metrics.rejected.labels(self.name).inc()
        return ApiError(429, f"{why}; retry after {RETRY_AFTER_S} s", headers={"Retry-After": str(RETRY_AFTER_S)})

    @contextlib.contextmanager
    def admit(self, metrics: Metrics) -> Iterator[Admission]:
        """Hold a place in this model's queue for one request, or refuse with 429. The place is
        kept until the request has returned and the engine work it `hold`s has left the engine
        (a request answered 504 still occupies the engine until its work is withdrawn)."""
        self.check_room(metrics)
        self.in_flight += 1
        metrics.queue_depth.labels(self.name).set(self.in_flight)
        admission = Admission()

        def release(*_: object) -> None:
            self.in_flight -= 1
            metrics.queue_depth.labels(self.name).set(self.in_flight)

        try:
            yield admission
        finally:
            admission.when_left(release)


class Admission:
    """The engine work of one admitted request."""

    def __init__(self) -> None:
        self._work: list[asyncio.Future | Future] = []

    def hold(self, work: asyncio.Future | Future) -> None:
        self._work.append(work)

    def when_left(self, callback: Callable[[], None]) -> None:
        """Call `callback` once every held piece of work is done (now, if it is)."""
        waiting = [work for work in self._work if not work.done()]
        if not waiting:
            callback()
            return
        remaining = len(waiting)
        loop = asyncio.get_running_loop()

        def one_done(_: object) -> None:
            nonlocal remaining
            remaining -= 1
            if remaining == 0:
                callback()

        for work in waiting:
            if isinstance(work, Future):  # an engine future, resolved on the engine thread
                work.add_done_callback(lambda f: loop.call_soon_threadsafe(one_done, f))
            else:
                work.add_done_callback(one_done)


@dataclass
class ServedTask:
    """A task on its model: its pipeline behind a micro-batcher, on the engine for its model and
    adapter, or why it cannot answer (a head-mode task without a head, an adapter that does not
    fit the model), said to every request with its fix."""

    spec: TaskSpec
    directory: Path | None
    model: ServedModel
    pipeline: Pipeline | None = None
    batcher: TaskBatcher | None = None
    problem: WorkhorseError | None = None
    engine: EngineWorker | None = None  # held from `model` until the task closes

    @classmethod
    def build(cls, spec: TaskSpec, directory: Path | None, model: ServedModel, settings: ServeSettings,
              metrics: Metrics, call_log: CallLog | None, embedding_cache: EmbeddingCache | None = None) -> ServedTask:
        try:
            adapter = adapter_of(directory)
            engine = model.engine_for(adapter)
        except WorkhorseError as error:
            log.warning("task %s is not ready: %s", spec.name, error)
            return cls(spec, directory, model, problem=error)
        try:
            pipeline = build_pipeline(spec, directory, engine, call_log=call_log, embedding_cache=embedding_cache)
        except WorkhorseError as error:
            model.release(adapter)
            log.warning("task %s is not ready: %s", spec.name, error)
            return cls(spec, directory, model, problem=error)
        batcher = TaskBatcher(pipeline.run, window_s=settings.batch_window_ms / 1000, max_batch=settings.max_batch_items,
                              max_pending=settings.queue_limit * settings.max_batch_items,
                              on_batch=metrics.batch_size.labels(spec.name).observe)
        return cls(spec, directory, model, pipeline, batcher, engine=engine)

    def ready(self) -> tuple[Pipeline, TaskBatcher]:
        if self.problem is not None:
            raise self.problem
        assert self.pipeline is not None and self.batcher is not None
        return self.pipeline, self.batcher

    def warm_up(self) -> None:
        """Run one item through a classify or embed task's kind (not logged), so that the first
        requests do not pay for its prompt prefix (one forward pass; generation tasks would cost a
        whole answer each, and are left cold)."""
        if self.pipeline is not None and self.spec.kind in ("classify", "embed"):
            self.pipeline.local.run(["warm-up"])

    async def close(self) -> None:
        if self.batcher is not None:
            await self.batcher.close()
        if self.pipeline is not None:
            self.pipeline.close()
        if self.engine is not None:
            engine, self.engine = self.engine, None
            await asyncio.to_thread(self.model.release, engine.adapter)  # closing an engine joins its thread

    async def retire(self, idle_s: float | None = None) -> None:
        """Close once no item has waited or run for `idle_s` (default `RETIRE_IDLE_S`): a request
        that took this task just before it was replaced still finishes on it."""
        idle_s = RETIRE_IDLE_S if idle_s is None else idle_s
        quiet_since = asyncio.get_running_loop().time()
        while self.batcher is not None and asyncio.get_running_loop().time() - quiet_since < idle_s:
            await asyncio.sleep(0.05)
            if self.batcher.pending:
                quiet_since = asyncio.get_running_loop().time()
        await self.close()


class ServerState:
    def __init__(self, settings: ServeSettings, *, tasks: list[str] | None = None, peer_tasks: list[str] = ()) -> None:
        """`tasks`: serve these (names or files) rather than the settings' choice. `peer_tasks`:
        tasks that other replicas of the same server serve (`serve --ray` runs a deployment per
        model), known here to check their corrections and to list them in the console."""
        self.settings = settings
        self._task_references = tasks
        self._peer_references = list(peer_tasks)
        self.peer_tasks: dict[str, TaskSpec] = {}
        self.metrics = Metrics()
        self.models: dict[str, ServedModel] = {}
        self.tasks: dict[str, ServedTask] = {}
        self._retiring: set[asyncio.Task] = set()  # replaced task versions finishing their work
        self.ready = False
        self.call_log: CallLog | None = None
        # One for the whole server: /v1/embeddings and the embed tasks share its bound.
        self.embedding_cache = EmbeddingCache(int(settings.embedding_cache_mb * 2**20))
        self.metrics.watch_engines(self._engine_readings)
        self.metrics.watch_embedding_cache(self.embedding_cache.stats)

    def _engine_readings(self) -> list[EngineReading]:
        def read(engine: Any) -> tuple[float, int, float]:
            return engine.prefix_stats().hit_rate, engine.stats.tokens_evaluated, engine.stats.decode_seconds

        readings = []
        for model in self.models.values():
            for name, worker in model.engines():
                try:
                    hit_rate, tokens, seconds = worker.call(read, timeout=METRICS_WAIT_S)
                except WorkhorseError:  # busy with a long batch, or closed during shutdown: not reported this time
                    continue
                readings.append(EngineReading(name, hit_rate, tokens, seconds))
        return readings

    def load(self) -> None:
        from workhorse.models import resolve
        from workhorse.tasks.store import load_task

        settings = self.settings
        resolved = {r.name: r for r in (resolve(reference) for reference in settings.models)}
        tasks = place_tasks(settings, list(resolved), self._task_references)
        self.peer_tasks = {spec.name: spec for spec, _ in map(load_task, self._peer_references)}
        for name, model in resolved.items():
            kinds = {placed.spec.kind for placed in tasks if placed.model == name}
            loaded = LlamaModel(model.path, name=name)
            threads = settings.encoder_threads if loaded.is_encoder else settings.threads
            config = engine_config(threads=threads, n_ctx=settings.n_ctx, n_slots=settings.n_slots, kinds=kinds)
            log.info("loading %s from %s (context %d, %d threads)", name, model.path, config.n_ctx, threads)
            worker = EngineWorker(loaded, config)
            if worker.model.chat_template:  # the grammar engine's view of the vocabulary, built once now (~0.6 s)
                JsonSchemaConstraint(worker.model, {"type": "object"})
            self.models[name] = ServedModel(name, worker, settings.queue_limit)
        if settings.log_calls:
            from workhorse.paths import call_log_path

            retention = Retention(days=settings.retention_days, max_rows=settings.retention_rows)
            self.call_log = CallLog(settings.call_log or call_log_path(), retention=retention)
        for placed in tasks:
            task = ServedTask.build(placed.spec, placed.directory, self.models[placed.model], settings, self.metrics,
                                    self.call_log, self.embedding_cache)
            self.tasks[placed.spec.name] = task
            try:
                task.warm_up()
            except WorkhorseError as error:  # answered again, with its fix, on the task's requests
                log.warning("task %s did not warm up: %s", placed.spec.name, error)
        # What is loaded lives as long as the server: kept out of the collector's full passes,
        # which would otherwise walk it (tens of ms, on the event loop's thread too) again and again.
        gc.freeze()
        self.ready = True

    async def watch_task_store(self, interval_s: float) -> None:
        """Serve each store task's active version as it changes (see `reload_changed_tasks`)."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.reload_changed_tasks()
            except Exception:  # a half-written or broken version must not stop the watching
                log.exception("checking the task store failed")

    async def reload_changed_tasks(self) -> list[str]:
        """Swap in the active version of every served store task whose version changed (a
        promotion, a rollback, a new `fit`); returns their names. The new version is built and
        warmed before it takes requests, on the engine for its model and LoRA adapter; the old one
        finishes what it has, then closes (and the engine for its adapter, when no other task uses
        it). A version that cannot answer (on a model not loaded, without its trained parts, with an
        adapter that does not fit the model) is not swapped in."""
        from workhorse.tasks.store import load_task, tasks_dir

        store = tasks_dir().resolve()
        swapped = []
        for name, served in list(self.tasks.items()):
            if served.directory is None or not served.directory.resolve().is_relative_to(store):
                continue
            spec, directory = await asyncio.to_thread(load_task, name)
            if spec.version == served.spec.version:
                continue
            if resolve_name(spec.model) != served.model.name:
                log.warning("task %s v%d needs model %s, which is not loaded: still serving v%d", name, spec.version,
                            spec.model, served.spec.version)
                continue
            fresh = await asyncio.to_thread(ServedTask.build, spec, directory, served.model, self.settings, self.metrics,
                                            self.call_log, self.embedding_cache)
            if fresh.problem is not None:
                log.warning("task %s v%d cannot answer (%s): still serving v%d", name, spec.version, fresh.problem,
                            served.spec.version)
                continue
            with contextlib.suppress(WorkhorseError):
                await asyncio.to_thread(fresh.warm_up)
            self.tasks[name] = fresh
            self._retiring.add(asyncio.create_task(served.retire()))
            log.info("task %s: now serving v%d (was v%d)", name, spec.version, served.spec.version)
            swapped.append(name)
        return swapped

    def served_names(self) -> list[str]:
        """The tasks this server answers: here, or on a peer replica."""
        return sorted({*self.tasks, *self.peer_tasks})

    def spec_of(self, name: str) -> TaskSpec | None:
        """The task as the server answers it: the version served here, else the active stored
        version (which a peer replica swaps in), else a peer's task file; None for none of them."""
        from workhorse.tasks.store import load_task

        if name in self.tasks:
            return self.tasks[name].spec
        try:
            return load_task(name)[0]
        except WorkhorseError:
            return self.peer_tasks.get(name)

    def embedding_model(self) -> str:
        """The model of a /v1/embeddings request that names none."""
        return default_embedding_model(self.settings, list(self.models))

    def model(self, name: str) -> ServedModel:
        if name not in self.models:
            raise UnknownModelError(f"model {name!r} is not loaded", f"use one of: {', '.join(self.models)}")
        return self.models[name]

    def task(self, name: str) -> ServedTask:
        if name not in self.tasks:
            known = ", ".join(sorted(self.tasks)) or "none"
            raise TaskNotFoundError(f"task {name!r} is not served", f"served tasks: {known}")
        return self.tasks[name]

    async def close(self) -> None:
        self.ready = False
        for retiring in self._retiring:
            retiring.cancel()
        for task in self.tasks.values():
            await task.close()
        for model in self.models.values():
            model.close()  # with the engines of replaced versions that had not retired yet
        if self.call_log is not None:
            self.call_log.close()


class PlacedTask(NamedTuple):
    reference: str  # as the settings name it (a name or a file), or the store's name
    spec: TaskSpec
    directory: Path | None
    model: str  # the loaded model it runs on


def place_tasks(settings: ServeSettings, models: list[str], references: list[str] | None = None) -> list[PlacedTask]:
    """The tasks to serve on the loaded `models`, each with the model it runs on: `references`
    when given, else those the settings name (one on a model not loaded is an error), else every
    stored and example task whose model is loaded."""
    from workhorse.tasks.store import EXAMPLES_DIR, list_task_names, load_task

    named = settings.tasks if references is None else references
    if not named and references is None:
        named_or_all = sorted({*list_task_names(), *(p.stem for p in EXAMPLES_DIR.glob("*.yaml"))})
    else:
        named_or_all = named
    found = []
    for reference in named_or_all:
        try:
            spec, directory = load_task(reference)
            model = resolve_name(spec.model)
        except WorkhorseError as error:
            if named:  # asked for by name: a broken task is a startup error
                raise
            log.warning("not serving task %s: %s", reference, error)
            continue
        if model in models:
            found.append(PlacedTask(reference, spec, directory, model))
        elif named:
            raise TaskError(
                f"task {spec.name} needs model {spec.model}, which is not loaded",
                f"add it to the models setting (loaded: {', '.join(models)})",
            )
    return found


def default_embedding_model(settings: ServeSettings, models: list[str]) -> str:
    """The model of a /v1/embeddings request that names none, among the loaded `models`."""
    from workhorse.models import DEFAULT_ENCODER_MODEL

    if settings.embedding_model:
        return settings.embedding_model
    return DEFAULT_ENCODER_MODEL if DEFAULT_ENCODER_MODEL in models else models[0]


def resolve_name(reference: str) -> str:
    """The loaded-model name a task's `model` reference resolves to."""
    from workhorse.models import resolve

    return resolve(reference, pull=False).name
