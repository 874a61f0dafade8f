"""`workhorse run TASK DATA --ray [ADDRESS]`: a task over a file on a Ray cluster.

Ray Data reads the rows (JSONL, CSV or Parquet) and streams them through a pool of actors
(`map_batches`); each actor owns one engine, with llama.cpp's threads set to the actor's CPUs
(Ray sets `OMP_NUM_THREADS=1` in workers, and llama.cpp would otherwise pick its own count), and
answers through the same pipeline as a local `run`: escalation, the call log, the bill. The
driver appends each answered batch to the output as it arrives, so the output holds each id once:

- a rerun skips the ids already in the output;
- each item is logged under a name made of the output file and its id, and an actor answers an
  item it finds in the log from the log: when an actor dies mid-batch, Ray retries the batch on
  a fresh actor, which neither answers nor logs twice what the dead one had committed.

With several actors the call log must take writes from several processes: a SQLite file on a
disk they share (one machine), or PostgreSQL (`postgresql://…`, any number of machines)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workhorse.errors import WorkhorseError
from workhorse.scale.cluster import LOCAL, join_ray

READERS = {"jsonl": "read_json", "csv": "read_csv", "parquet": "read_parquet"}
BATCHES_PER_BLOCK = 8


@dataclass(frozen=True)
class RayJob:
    task: str
    source: str
    out: Path
    fmt: str  # jsonl | csv | parquet
    field: str = "text"
    id_field: str = "id"
    actors: int = 1
    cpus_per_actor: int = 1
    batch: int = 32
    log_to: str | None = None  # the call log (None: not logged)
    escalate: bool = True
    address: str = LOCAL  # a running cluster's, or `local` for a Ray on this machine


class TaskActor:
    """One engine and pipeline for the task, answering batches of rows (Ray Data calls it)."""

    def __init__(self, task: str, threads: int, log_to: str | None, escalate: bool, ref_prefix: str,
                 field: str, id_field: str) -> None:
        from workhorse.calllog import CallLog
        from workhorse.pipeline import build_pipeline
        from workhorse.tasks.engines import open_task_engine
        from workhorse.tasks.store import load_task

        self.spec, directory = load_task(task)
        self.engine = open_task_engine(self.spec, directory, threads=threads)
        calls = CallLog(log_to) if log_to else None
        self.pipeline = build_pipeline(self.spec, directory, self.engine, call_log=calls, escalate=escalate)
        self.ref_prefix, self.field, self.id_field = ref_prefix, field, id_field
        pid_file = os.environ.get("WORKHORSE_RAY_PID_FILE")  # lets a test find the actor processes
        if pid_file:
            with open(pid_file, "a", encoding="utf-8") as handle:
                handle.write(f"{os.getpid()}\n")

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        ids = [str(key) for key in batch[self.id_field]]
        texts = [str(text) for text in batch[self.field]]
        refs = [self.ref_prefix + key for key in ids]
        answers, _ = self.pipeline.run_once(texts, refs)
        return {"line": [json.dumps({"id": key} | answer.as_dict(), ensure_ascii=False)
                         for key, answer in zip(ids, answers, strict=True)]}


def run_on_ray(job: RayJob, done: set[str], *, on_batch: Callable[[int], None] = lambda _: None) -> dict[str, Any]:
    """Answer every row of `job.source` whose id is not in `done`, appending to `job.out`."""
    import ray

    if job.fmt not in READERS:
        raise WorkhorseError(f"--ray reads {', '.join(READERS)} files, not {job.fmt}", "convert the file, or run without --ray")
    started_here = join_ray(job.address, job.actors * job.cpus_per_actor, quiet_workers=True)
    _quiet(ray)
    try:
        rows = getattr(ray.data, READERS[job.fmt])(job.source)
        columns = set(rows.schema().names)
        for needed, option in ((job.field, "--field"), (job.id_field, "--id-field")):
            if needed not in columns:
                raise WorkhorseError(f"{job.source} has no column {needed!r} (it has {', '.join(sorted(columns))})",
                                     f"name the column with {option}; a distributed read has no line numbers to use as ids")
        if done:
            rows = rows.filter(lambda row, skip=frozenset(done): str(row[job.id_field]) not in skip)
        # Blocks of a whole number of batches, in order: each engine call then holds the same items
        # as a plain `run`'s, and so gives the same numbers (llama.cpp's arithmetic for an item
        # depends on the other items in its batch; Ray Data would otherwise cut batches at its own
        # block ends). Several batches a block: fewer, larger tasks for Ray to hand out.
        rows = rows.repartition(target_num_rows_per_block=job.batch * BATCHES_PER_BLOCK, strict=True)
        ref_prefix = f"run:{job.out.resolve()}#"
        answered = rows.map_batches(
            TaskActor, batch_size=job.batch, batch_format="numpy", num_cpus=job.cpus_per_actor,
            compute=ray.data.ActorPoolStrategy(size=job.actors),
            fn_constructor_kwargs={"task": job.task, "threads": job.cpus_per_actor, "log_to": job.log_to,
                                   "escalate": job.escalate, "ref_prefix": ref_prefix, "field": job.field,
                                   "id_field": job.id_field},
        )
        written = _append(job.out, answered.iter_batches(batch_size=None, batch_format="numpy"), on_batch)
    finally:
        if started_here:
            ray.shutdown()
    return {"answered": written, "skipped": len(done)}


def _quiet(ray: Any) -> None:
    """workhorse's own progress bar reports the job: Ray Data's bars and per-stage logs would
    interleave with it on stderr."""
    import logging

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.enable_operator_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def _append(out: Path, batches: Iterator[dict[str, Any]], on_batch: Callable[[int], None]) -> int:
    """Write each batch's lines as it arrives, flushed: an interrupted job keeps what it wrote."""
    written = 0
    with out.open("a", encoding="utf-8") as sink:
        for batch in batches:
            lines = [str(line) for line in batch["line"]]
            sink.write("".join(line + "\n" for line in lines))
            sink.flush()
            written += len(lines)
            on_batch(len(lines))
    return written
