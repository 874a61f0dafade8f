"""`workhorse train`: a candidate version trained on data (a dataset built from the call log, a
file or a dataset spec), gated against the incumbent on held-out rows, promoted if it passes.

Methods: `head` (the classification head of `workhorse fit`) and `lora`: for a classify task the
head and LoRA adapters on the feature model, trained together in torch (`lora_classify`); for an
extract or convert task adapters trained on the answers (`lora_generate`), the candidate a copy
of the active version's spec (schema, instructions, examples). Every candidate is saved as a
version with its gate report (`gate.json`), promoted or not, so a failed candidate can still be
inspected or promoted by hand.
"""

from __future__ import annotations

import json
import math
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from workhorse.engine import LlamaModel
from workhorse.errors import TaskError, TaskNotFoundError
from workhorse.evals.datasets import Dataset, load, load_file
from workhorse.flywheel.gate import GateReport, Measured, MeasuredAnswers, decide, measure, paired_latencies
from workhorse.flywheel.lora_classify import LoraOptions, LoraReport, fit_lora
from workhorse.flywheel.lora_generate import GENERATED_KINDS, GenerateReport, fit_lora_generate
from workhorse.flywheel.output import resolve as resolve_dataset
from workhorse.models import resolve
from workhorse.tasks.abstention import choose_out_of_scope
from workhorse.tasks.classify import HEAD_FILE
from workhorse.tasks.engines import TaskEngines, engine_config
from workhorse.tasks.features import FeatureExtractor
from workhorse.tasks.fit import FitResult, carried_adapter, fit, task_for_data
from workhorse.tasks.head import LinearHead
from workhorse.tasks.spec import TaskSpec
from workhorse.tasks.store import load_task, next_version, pin_active, promote, save_task, task_versions, write_durably

METHODS = ("head", "lora")
GATE_FILE = "gate.json"


@dataclass(frozen=True)
class TrainOutcome:
    fitted: FitResult
    gate: GateReport
    promoted: bool
    lora: LoraReport | GenerateReport | None = None


class Bar(Protocol):
    def advance(self, n: int = 1, *, detail: str | None = None) -> None: ...

    def already(self, n: int) -> None: ...


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

    def start(self, total_tokens: int, done_tokens: int = 0) -> None:
        if self._phases:
            self._bar = self._stack.enter_context(self._phases(self._label, total_tokens, unit="tokens"))
            if done_tokens:
                self._bar.already(done_tokens)

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
    """Train a candidate version of `task` (a name; for an extract or convert task also its task
    file), measure it and the incumbent on `holdout`, promote it if it passes. `model`: a new
    classify candidate's model (default: the task's, or gemma3-270m for a new task)."""
    if method not in METHODS:
        raise TaskError(f"training method {method!r} is not available", f"use one of: {', '.join(METHODS)}")
    task, candidate, incumbent, incumbent_dir = _candidate(task, train, method, model)
    if candidate.kind == "classify" and candidate.classify.out_of_scope and not holdout.oos_label:
        raise TaskError(f"task {task} abstains on out-of-scope requests, and a new version's threshold is chosen on "
                        f"held-out rows with an out-of-scope label: {holdout.name}:{holdout.split} has none",
                        f"give held-out rows labelled {candidate.classify.out_of_scope.label!r} among the others "
                        "(a dataset spec such as clinc150:val, or a file)")
    rows = len(train.examples)
    lora_report = None
    # Each side runs on its own model and adapter; when they are the same, on the same engine.
    with TaskEngines(engine_config(threads=threads, kinds=[candidate.kind])) as engines:
        if method == "lora":
            options = replace(lora or LoraOptions(), threads=threads)
            steps = _StepBar(phases, f"train {task} (LoRA)")
            classify = candidate.kind == "classify"
            fit_method = fit_lora if classify else fit_lora_generate
            try:
                with _phase(phases, f"{'embed' if classify else 'prepare'} {task} training rows", rows) as bar:
                    fitted, lora_report = fit_method(candidate, train, LlamaModel(resolve(candidate.model).path, name=candidate.model),
                                                     options=options, progress=bar.advance, steps=steps)
            finally:
                steps.close()
            if classify and holdout.oos_label:
                fitted = _abstain_as_chosen_on(holdout, fitted, train, engines, phases)
        else:
            abstention = holdout if holdout.oos_label else None
            with _phase(phases, f"embed {task} training rows", rows + len(abstention.examples if abstention else [])) as bar:
                fitted = fit(candidate, train, engines.get(candidate.model, carried_adapter(candidate)), validation=abstention,
                             progress=bar.advance, activate=False)
        measured = _measure(engines, fitted.spec, fitted.directory, holdout, phases, "candidate")
        baseline = None
        if incumbent is not None:
            baseline = _measure(engines, incumbent, incumbent_dir, holdout, phases, "active version")
            candidate_ms, incumbent_ms = paired_latencies([
                (fitted.spec, fitted.directory, engines.for_task(fitted.spec, fitted.directory)),
                (incumbent, incumbent_dir, engines.for_task(incumbent, incumbent_dir)),
            ], holdout)
            measured, baseline = replace(measured, p50_ms=candidate_ms), replace(baseline, p50_ms=incumbent_ms)
    gate = decide(measured, baseline, rows=len(holdout.examples), margin=margin, max_latency_ratio=max_latency_ratio)
    write_durably(fitted.directory / GATE_FILE, json.dumps(gate.as_dict(), indent=2).encode())
    if gate.passed:
        promote(task, fitted.spec.version, reason="passed its gate")
    return TrainOutcome(fitted, gate, gate.passed, lora_report)


def _candidate(task: str, train: Dataset, method: str, model: str | None) -> tuple[str, TaskSpec, TaskSpec | None, Path | None]:
    """(the task's name, the candidate's spec, the incumbent's spec and directory). The candidate is
    saved later, as the next version; the incumbent is pinned as the active version meanwhile, so
    that the candidate does not answer by being the latest."""
    from_file = Path(task).suffix in (".yaml", ".yml")
    try:
        incumbent, incumbent_dir = load_task(task)
    except TaskNotFoundError:
        if from_file:
            raise
        incumbent, incumbent_dir = None, None
    if incumbent is not None and incumbent.kind in GENERATED_KINDS:
        task = incumbent.name
        if method != "lora":
            raise TaskError(f"task {task} ({incumbent.kind}): the {method} method trains classify tasks",
                            "train it with --method lora")
        if from_file and task_versions(task):
            raise TaskError(f"task {task} is stored already", f"train it by name: workhorse train {task} (its active "
                            "version is the one to beat)")
        if not task_versions(task):  # a task file or a shipped task: stored as it is first, as the version to beat
            save_task(incumbent)
            incumbent, incumbent_dir = load_task(task)
        pin_active(task)
        return task, incumbent.model_copy(update={"version": next_version(task)}), incumbent, incumbent_dir
    if from_file:
        raise TaskError(f"{task}: a classify task trains by name", "workhorse train NAME (workhorse fit DATA --task NAME creates one)")
    if incumbent is not None and incumbent.kind != "classify":
        raise TaskError(f"task {task} ({incumbent.kind}) has nothing to train", "train classify, extract or convert tasks")
    if incumbent is None and train.kind == "extract":
        raise TaskError(f"there is no task {task!r} to train on these answers",
                        f"an extract or convert task needs its spec (schema, instructions) first: write one with "
                        f"workhorse tasks new {task} --kind extract, then train the file: workhorse train {task}.yaml …")
    if task_versions(task):
        pin_active(task)
    return task, task_for_data(task, train, model=model, prompt=None, layers=None), incumbent, incumbent_dir


def _abstain_as_chosen_on(holdout: Dataset, fitted: FitResult, train: Dataset, engines: TaskEngines,
                          phases: Phases | None) -> FitResult:
    """The LoRA candidate with its out-of-scope detector chosen on the held-out rows, as `fit`
    chooses one: on the features the engine serves with the new adapter (the incumbent's detector,
    if any, belongs to other features). The gate then reads the rows the threshold was chosen on,
    as it does for an incumbent fitted with `--validation` on them."""
    spec, directory = fitted.spec, fitted.directory
    options = spec.classify
    extractor = FeatureExtractor(engines.for_task(spec, directory), options.feature_prompt, options.layers,
                                 options.features_pooling)
    rows = [ex for ex in train.examples if ex.label is not None]
    with _phase(phases, f"abstention: embed {spec.name} rows", len(rows) + len(holdout.examples)) as bar:
        features = extractor.extract([ex.text for ex in rows], progress=bar.advance)
        spec = choose_out_of_scope(spec, directory, LinearHead.load(directory / HEAD_FILE), extractor, features,
                                   [ex.label for ex in rows], holdout, progress=bar.advance)  # type: ignore[misc]
    return replace(fitted, spec=spec, directory=save_task(spec))


def _measure(engines: TaskEngines, spec: TaskSpec, directory: Path | None, holdout: Dataset, phases: Phases | None,
             side: str) -> Measured | MeasuredAnswers:
    with _phase(phases, f"gate: {side} v{spec.version}", len(holdout.examples)) as bar:
        return measure(spec, directory, engines.for_task(spec, directory), holdout, bar.advance)


class _NoBar:
    def advance(self, n: int = 1, *, detail: str | None = None) -> None:
        pass


def _phase(phases: Phases | None, label: str, total: int) -> AbstractContextManager[Bar]:
    return phases(label, total) if phases else nullcontext(_NoBar())
