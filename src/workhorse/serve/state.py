"""What a running server holds: one engine thread per model, the tasks served on them, and the
admission count that turns a full queue into 429."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workhorse.calllog import CallLog, Retention
from workhorse.engine import EngineConfig, EngineWorker
from workhorse.escalation.runner import EscalatingRunner
from workhorse.escalation.upstream import UpstreamClient, UpstreamSettings
from workhorse.errors import TaskError, TaskNotFoundError, UnknownModelError, WorkhorseError
from workhorse.serve.batching import TaskBatcher
from workhorse.serve.errors import ApiError
from workhorse.serve.metrics import EngineReading, Metrics
from workhorse.serve.settings import ServeSettings
from workhorse.tasks.runner import TaskRunner
from workhorse.tasks.spec import TaskSpec

log = logging.getLogger("workhorse.serve")

RETRY_AFTER_S = 1


@dataclass
class ServedModel:
    name: str
    worker: EngineWorker
    limit: int
    in_flight: int = 0

    def check_room(self, metrics: Metrics) -> None:
        """429 when the queue is full (streams check before their 200 goes out)."""
        if self.in_flight >= self.limit:
            metrics.rejected.labels(self.name).inc()
            raise ApiError(
                429,
                f"{self.name} has {self.in_flight} requests in flight (limit {self.limit}); retry after {RETRY_AFTER_S} s",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )

    @contextlib.contextmanager
    def admit(self, metrics: Metrics) -> Iterator[None]:
        """Hold a place in this model's queue for one request, or refuse with 429."""
        self.check_room(metrics)
        self.in_flight += 1
        metrics.queue_depth.labels(self.name).set(self.in_flight)
        try:
            yield
        finally:
            self.in_flight -= 1
            metrics.queue_depth.labels(self.name).set(self.in_flight)


@dataclass
class ServedTask:
    spec: TaskSpec
    directory: Path | None
    model: ServedModel
    _local: TaskRunner | None = field(default=None, repr=False)
    _batcher: TaskBatcher | None = field(default=None, repr=False)

    def local_runner(self) -> TaskRunner:
        """Built on first use: a head-mode task without a head fails here, with its fix."""
        if self._local is None:
            self._local = TaskRunner(self.spec, self.directory, self.model.worker)  # type: ignore[arg-type]
        return self._local

    def warm_up(self) -> None:
        """Run one item through a classify or embed task, so that the first requests do not pay
        for loading its head and computing its prompt prefix (one forward pass; generation tasks
        would cost a whole answer each, and are left cold)."""
        if self.spec.kind in ("classify", "embed"):
            self.local_runner().run(["warm-up"])

    def batcher(self, settings: ServeSettings, metrics: Metrics, log: CallLog | None) -> TaskBatcher:
        if self._batcher is None:
            local = self.local_runner()
            run = local.run
            if log is not None or self.spec.escalation.mode != "never":
                worker = self.model.worker
                run = EscalatingRunner(
                    self.spec, local, upstream=_upstream_client(self.spec), log=log,
                    count_tokens=lambda text: len(worker.tokenize(text, add_special=False)),
                ).run
            observe = metrics.batch_size.labels(self.spec.name).observe
            self._batcher = TaskBatcher(
                run, window_s=settings.batch_window_ms / 1000, max_batch=settings.max_batch_items, on_batch=observe
            )
        return self._batcher


def _upstream_client(spec: TaskSpec) -> UpstreamClient | None:
    options = spec.escalation.upstream
    if spec.escalation.mode == "never" or options is None:
        return None
    return UpstreamClient(UpstreamSettings.from_options(options))


class ServerState:
    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.models: dict[str, ServedModel] = {}
        self.tasks: dict[str, ServedTask] = {}
        self.ready = False
        self.call_log: CallLog | None = None
        self.metrics.watch_engines(self._engine_readings)

    def _engine_readings(self) -> list[EngineReading]:
        def read(engine: Any) -> tuple[float, int, float]:
            return engine.prefix_stats().hit_rate, engine.stats.tokens_evaluated, engine.stats.decode_seconds

        readings = []
        for name, model in self.models.items():
            try:
                hit_rate, tokens, seconds = model.worker.call(read)
            except WorkhorseError:  # closed during shutdown: nothing to report for it
                continue
            readings.append(EngineReading(name, hit_rate, tokens, seconds))
        return readings

    def load(self) -> None:
        from workhorse.models import resolve

        config = EngineConfig(n_ctx=self.settings.n_ctx, n_threads=self.settings.threads, n_slots=self.settings.n_slots)
        for reference in self.settings.models:
            resolved = resolve(reference)
            log.info("loading %s from %s", resolved.name, resolved.path)
            worker = EngineWorker(resolved.path, config, name=resolved.name)
            self.models[resolved.name] = ServedModel(resolved.name, worker, self.settings.queue_limit)
        self._load_tasks()
        for task in self.tasks.values():
            try:
                task.warm_up()
            except WorkhorseError as error:  # answered again, with its fix, on the task's first request
                log.warning("task %s is not ready: %s", task.spec.name, error)
        if self.settings.log_calls:
            from workhorse.paths import call_log_path

            path = self.settings.call_log or call_log_path()
            retention = Retention(days=self.settings.retention_days, max_rows=self.settings.retention_rows)
            self.call_log = CallLog(path, retention=retention)
        self.ready = True

    def _load_tasks(self) -> None:
        from workhorse.models import resolve
        from workhorse.tasks.store import EXAMPLES_DIR, list_task_names, load_task

        names = self.settings.tasks or sorted({*list_task_names(), *(p.stem for p in EXAMPLES_DIR.glob("*.yaml"))})
        for name in names:
            try:
                spec, directory = load_task(name)
                model = self.models.get(resolve(spec.model, pull=False).name)
            except WorkhorseError as error:
                if self.settings.tasks:  # asked for by name: a broken task is a startup error
                    raise
                log.warning("not serving task %s: %s", name, error)
                continue
            if model is None:
                if self.settings.tasks:
                    raise TaskError(
                        f"task {spec.name} needs model {spec.model}, which is not loaded",
                        f"add it to the models setting (loaded: {', '.join(self.models)})",
                    )
                continue
            self.tasks[spec.name] = ServedTask(spec, directory, model)

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
        for task in self.tasks.values():
            if task._batcher is not None:
                await task._batcher.close()
        for model in self.models.values():
            model.worker.close()
        if self.call_log is not None:
            self.call_log.close()
