"""`workhorse train`: a candidate version trained on data (a dataset built from the call log, a
file or a dataset spec), gated against the incumbent on held-out rows, promoted if it passes.

Methods: `head` (the classification head of `workhorse fit`). Every candidate is saved as a
version with its gate report (`gate.json`), promoted or not, so a failed candidate can still be
inspected or promoted by hand.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from workhorse.errors import TaskError, TaskNotFoundError
from workhorse.evals.datasets import Dataset, load, load_file
from workhorse.flywheel.gate import GateReport, decide, measure
from workhorse.flywheel.output import resolve as resolve_dataset
from workhorse.tasks.engines import engine_config, open_engine
from workhorse.tasks.fit import FitResult, fit, task_for_data
from workhorse.tasks.store import load_task, pin_active, promote, task_versions, write_durably

METHODS = ("head",)
GATE_FILE = "gate.json"


@dataclass(frozen=True)
class TrainOutcome:
    fitted: FitResult
    gate: GateReport
    promoted: bool


def training_data(data: str, holdout: str | None) -> tuple[Dataset, Dataset]:
    """(train rows, held-out rows). `data` is a dataset folder from `workhorse dataset build` (its
    latest version's train and validation files), or a file or dataset spec with `holdout` beside it."""
    folder = Path(data)
    if folder.is_dir():
        chosen = folder if (folder / "train.jsonl").is_file() else resolve_dataset(folder)
        train, validation = chosen / "train.jsonl", chosen / "validation.jsonl"
        if not train.is_file():
            raise TaskError(f"{folder} has no train.jsonl", "build one: workhorse dataset build TASK -o DIR")
        if holdout is None and not validation.is_file():
            raise TaskError(f"{chosen} has no validation.jsonl to gate on", "give held-out rows with --holdout FILE|SPEC")
        return load_file(train), load(holdout) if holdout else load_file(validation)
    if holdout is None:
        raise TaskError(f"no held-out rows for {data}", "give them with --holdout FILE|SPEC (rows not in the training data)")
    return load(data), load(holdout)


def train_and_gate(task: str, train: Dataset, holdout: Dataset, *, method: str = "head", margin: float = 0.005,
                   max_latency_ratio: float = 1.2, threads: int = 2, model: str | None = None,
                   progress: Callable[[int], None] | None = None) -> TrainOutcome:
    """Train a candidate version of `task`, measure it and the incumbent on `holdout`, promote it if
    it passes. `model`: the candidate's model (default: the task's, or gemma3-270m for a new task).
    `progress` hears of the training items embedded, then of the held-out items answered by each side."""
    if method not in METHODS:
        raise TaskError(f"training method {method!r} is not available", f"use one of: {', '.join(METHODS)}")
    try:
        incumbent, incumbent_dir = load_task(task)
    except TaskNotFoundError:
        incumbent, incumbent_dir = None, None
    if task_versions(task):
        pin_active(task)  # the candidate must not answer by being the latest version
    candidate = task_for_data(task, train, model=model, prompt=None, layers=None)
    engines = {candidate.model: open_engine(candidate.model, engine_config(threads=threads, kinds=["classify"]))}
    try:
        fitted = fit(candidate, train, engines[candidate.model], progress=progress, activate=False)
        measured = measure(fitted.spec, fitted.directory, engines[candidate.model], holdout, progress)
        baseline = None
        if incumbent is not None:
            if incumbent.model not in engines:
                engines[incumbent.model] = open_engine(incumbent.model, engine_config(threads=threads, kinds=["classify"]))
            baseline = measure(incumbent, incumbent_dir, engines[incumbent.model], holdout, progress)
    finally:
        for engine in engines.values():
            engine.close()
    gate = decide(measured, baseline, rows=len(holdout.examples), margin=margin, max_latency_ratio=max_latency_ratio)
    write_durably(fitted.directory / GATE_FILE, json.dumps(gate.as_dict(), indent=2).encode())
    if gate.passed:
        promote(task, fitted.spec.version, reason="passed its gate")
    return TrainOutcome(fitted, gate, gate.passed)
