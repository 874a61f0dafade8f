"""Every task kind behind one interface, looked up from one table.

    local = open_local_task(spec, directory, engine)
    answers = local.run(texts)        # one LocalAnswer per text, in order

A kind is a class built from (spec, task directory, evaluator) with a `run(texts)`; adding a kind
is adding a row here. Escalation and the call log are not a kind's business: the pipeline adds them.
The `embed` kind also takes the process's embedding cache, when there is one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from workhorse.engine import Evaluator
from workhorse.tasks.answer import LocalAnswer
from workhorse.tasks.classify import ClassifyTask
from workhorse.tasks.embed import EmbedTask
from workhorse.tasks.embedding_cache import EmbeddingCache
from workhorse.tasks.engines import check_adapter
from workhorse.tasks.logs import LogsTask
from workhorse.tasks.spec import TaskKind, TaskSpec
from workhorse.tasks.structured import StructuredTask


class LocalTask(Protocol):
    spec: TaskSpec

    def run(self, texts: Sequence[str]) -> list[LocalAnswer]: ...


KINDS: dict[TaskKind, Callable[[TaskSpec, Path | None, Evaluator], LocalTask]] = {
    "classify": ClassifyTask,
    "extract": StructuredTask,
    "convert": StructuredTask,
    "embed": EmbedTask,
    "logs": LogsTask,
}


def open_local_task(spec: TaskSpec, directory: Path | None, evaluator: Evaluator, *,
                    embedding_cache: EmbeddingCache | None = None) -> LocalTask:
    """The task's kind, ready to answer on `evaluator` (a head-mode task without a head, or an
    engine without the version's LoRA adapter, fails here, with its fix). `embedding_cache`: where
    an `embed` task keeps its vectors (shared with the other users of the cache; the other kinds'
    answers depend on more than a vector, and are not cached)."""
    check_adapter(spec, directory, evaluator)
    if spec.kind == "embed":
        return EmbedTask(spec, directory, evaluator, cache=embedding_cache)
    return KINDS[spec.kind](spec, directory, evaluator)
