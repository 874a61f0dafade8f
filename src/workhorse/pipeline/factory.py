"""Building a pipeline from a task version: its kind on an engine, its upstream, the call log."""

from __future__ import annotations

from pathlib import Path

from workhorse.calllog import CallLog
from workhorse.calllog.prices import PriceTable
from workhorse.engine import Evaluator
from workhorse.escalation.upstream import UpstreamClient
from workhorse.pipeline.pipeline import Pipeline
from workhorse.tasks.embedding_cache import EmbeddingCache
from workhorse.tasks.kinds import open_local_task
from workhorse.tasks.spec import TaskSpec


def build_pipeline(
    spec: TaskSpec,
    directory: Path | None,
    evaluator: Evaluator,
    *,
    call_log: CallLog | None = None,
    escalate: bool = True,
    upstream: UpstreamClient | None = None,
    prices: PriceTable | None = None,
    embedding_cache: EmbeddingCache | None = None,
) -> Pipeline:
    """`escalate=False` answers everything locally; otherwise `upstream` (default: a client for the
    task's `escalation.upstream`) answers what the task's policy escalates. `prices` default to the
    built-in list prices overridden by `$WORKHORSE_HOME/prices.yaml`. `embedding_cache`: shared by
    the embed tasks of a process (a cached vector is still logged as a call, like any answer)."""
    local = open_local_task(spec, directory, evaluator, embedding_cache=embedding_cache)
    if not escalate:
        upstream = None
    elif upstream is None and spec.escalation.mode != "never" and spec.escalation.upstream is not None:
        upstream = UpstreamClient(spec.escalation.upstream)
    if upstream is not None and spec.escalation.privacy == "redact":
        from workhorse.privacy import prepare

        prepare()  # the secret rules compile once, here, not inside the first escalation's budget
    if prices is None:
        from workhorse.paths import prices_path

        prices = PriceTable.load(prices_path())
    model = evaluator.model
    return Pipeline(local, model=model.name, upstream=upstream, call_log=call_log, prices=prices,
                    count_tokens=lambda text: len(model.tokenize(text, add_special=False)))
