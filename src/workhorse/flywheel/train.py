"""`workhorse train`: a candidate version trained on data (a dataset built from the call log, a
file or a dataset spec), gated against the incumbent on held-out rows, promoted if it passes.

Methods: `head` (the classification head of `workhorse fit`) and `lora` (the head and LoRA
adapters on the feature model, trained together in torch; see `lora_classify`). Every candidate is
saved as a version with its gate report (`gate.json`), promoted or not, so a failed candidate can
still be inspected or promoted by hand.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from workhorse.engine import Engine, LlamaModel
from workhorse.errors import TaskError, TaskNotFoundError
from workhorse.evals.datasets import Dataset, load, load_file
from workhorse.flywheel.gate import GateReport, Measured, decide, measure
from workhorse.flywheel.lora_classify import LoraOptions, LoraReport, fit_lora
from workhorse.flywheel.output import resolve as resolve_dataset
from workhorse.models import resolve
from workhorse.tasks.engines import engine_config, open_engine
from workhorse.tasks.fit import FitResult, fit, task_for_data
from workhorse.tasks.spec import TaskSpec
from workhorse.tasks.store import load_task, pin_active, promote, task_versions, write_durably

METHODS = ("head", "lora")
GATE_FILE = "gate.json"


@dataclass(frozen=True)
class TrainOutcome:
    fitted: FitResult
    gate: GateReport
    promoted: bool
    lora: LoraReport | None = None


class Bar(Protocol):
    def advance(self, n: int = 1, *, detail: str | None = None) -> None: ...


class Phases(Protocol):
    """Progress by phase: each phase of a run (embedding, training steps, each side of the gate)
    opens its own bar, as `workhorse.cli.progress.progress` does."""

    def __call__(self, label: str, total: int | None = None, *, unit: str = "items") -> AbstractContextManager[Bar]: ...


class _StepBar:
    """LoRA steps on a phase bar counted in tokens, with the smoothed loss beside the rate."""

    def __init__(self, phases: Phases | None, label: str) -> None:
        self._phases, self._label = phases, label
        self._bar: Bar | None = None
        self._stack = ExitStack()

    def start(self, total_tokens: int) -> None:
        if self._phases:
            self._bar = self._stack.enter_context(self._phases(self._label, total_tokens, unit="tokens"))

    def step(self, tokens: int, loss: float) -> None:
        if self._bar:
            self._bar.advance(tokens, detail=None if math.isnan(loss) else f"loss {loss:.3f}")

    def close(self) -> None:
        self._stack.close()


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
                   max_latency_ratio: float = 1.2, threads: int = 2, lora: LoraOptions | None = None,
                   model: str | None = None, phases: Phases | None = None) -> TrainOutcome:
    """Train a candidate version of `task`, measure it and the incumbent on `holdout`, promote it if
    it passes. `model`: the candidate's model (default: the task's, or gemma3-270m for a new task)."""
    if method not in METHODS:
        raise TaskError(f"training method {method!r} is not available", f"use one of: {', '.join(METHODS)}")
    try:
        incumbent, incumbent_dir = load_task(task)
    except TaskNotFoundError:
        incumbent, incumbent_dir = None, None
    if task_versions(task):
        pin_active(task)  # the candidate must not answer by being the latest version
    candidate = task_for_data(task, train, model=model, prompt=None, layers=None)
    rows = len(train.examples)
    lora_report = None
    if method == "lora":
        options = replace(lora or LoraOptions(), threads=threads)
        steps = _StepBar(phases, f"train {task} (LoRA)")
        try:
            with _phase(phases, f"embed {task} training rows", rows) as bar:
                fitted, lora_report = fit_lora(candidate, train, LlamaModel(resolve(candidate.model).path, name=candidate.model),
                                               options=options, progress=bar.advance, steps=steps)
        finally:
            steps.close()
    else:
        with _phase(phases, f"embed {task} training rows", rows) as bar, _engine(candidate, None, threads) as engine:
            fitted = fit(candidate, train, engine, progress=bar.advance, activate=False)
    measured = _measure(fitted.spec, fitted.directory, holdout, threads, phases, "candidate")
    baseline = _measure(incumbent, incumbent_dir, holdout, threads, phases, "active version") if incumbent else None
    gate = decide(measured, baseline, rows=len(holdout.examples), margin=margin, max_latency_ratio=max_latency_ratio)
    write_durably(fitted.directory / GATE_FILE, json.dumps(gate.as_dict(), indent=2).encode())
    if gate.passed:
        promote(task, fitted.spec.version, reason="passed its gate")
    return TrainOutcome(fitted, gate, gate.passed, lora_report)


def _measure(spec: TaskSpec, directory: Path | None, holdout: Dataset, threads: int, phases: Phases | None, side: str) -> Measured:
    with _phase(phases, f"gate: {side} v{spec.version}", len(holdout.examples)) as bar, _engine(spec, directory, threads) as engine:
        return measure(spec, directory, engine, holdout, bar.advance)


@contextmanager
def _engine(spec: TaskSpec, directory: Path | None, threads: int) -> Iterator[Engine]:
    engine = open_engine(spec.model, engine_config(threads=threads, kinds=["classify"]))
    try:
        yield engine
    finally:
        engine.close()


class _NoBar:
    def advance(self, n: int = 1, *, detail: str | None = None) -> None:
        pass


def _phase(phases: Phases | None, label: str, total: int) -> AbstractContextManager[Bar]:
    return phases(label, total) if phases else nullcontext(_NoBar())
