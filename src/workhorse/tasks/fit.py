"""`workhorse fit`: labelled data in, a trained classification head stored as a new task version."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from workhorse.engine import Adapter, Evaluator
from workhorse.errors import TaskError, TaskNotFoundError
from workhorse.evals.datasets import Dataset
from workhorse.tasks.abstention import choose_out_of_scope
from workhorse.tasks.classify import HEAD_FILE
from workhorse.tasks.engines import adapter_of, check_adapter
from workhorse.tasks.features import FeatureExtractor
from workhorse.tasks.head import TrainReport, train_head
from workhorse.tasks.spec import ClassifyOptions, LabelSpec, TaskSpec
from workhorse.tasks.store import ADAPTER_FILE, copy_durably, load_task, make_active, next_version, save_task, version_dir


@dataclass(frozen=True)
class FitResult:
    spec: TaskSpec
    directory: Path
    report: TrainReport | None  # the head's training (None for an adapter trained on answers)


def task_for_data(
    name: str,
    data: Dataset,
    *,
    model: str | None,
    prompt: str | None,
    layers: list[int] | None,
    pooling: str | None = None,
) -> TaskSpec:
    """The next version of task `name` in head mode, created from the data's labels if new."""
    labels = sorted({ex.label for ex in data.examples if ex.label is not None})
    if len(labels) < 2:
        raise TaskError(f"{data.name}:{data.split} has fewer than two labels", "fit needs labelled rows (a `label` column)")
    try:
        previous, _ = load_task(name)
    except TaskNotFoundError:
        previous = None
    options = previous.classify.model_copy() if previous else ClassifyOptions()
    options.mode = "head"
    changes = {"feature_prompt": prompt, "pooling": pooling}
    options = ClassifyOptions.model_validate(options.model_dump() | {k: v for k, v in changes.items() if v is not None})
    if layers is not None:
        options.layers = layers
    described = {label.name: label for label in previous.labels} if previous else {}
    return TaskSpec(
        name=name,
        kind="classify",
        version=next_version(name),
        model=model or (previous.model if previous else "gemma3-270m"),
        description=previous.description if previous else f"trained on {data.name}:{data.split}",
        language=previous.language if previous else data.language,
        instructions=previous.instructions if previous else "",
        labels=[described.get(label, LabelSpec(name=label)) for label in labels],
        classify=options,
    )


def carried_adapter(spec: TaskSpec) -> Adapter | None:
    """The LoRA adapter the next version `spec` of a task keeps: the active version's, when both
    run on the same model (a head is refitted on the model as the task has tuned it)."""
    try:
        previous, directory = load_task(spec.name)
    except TaskNotFoundError:
        return None
    return adapter_of(directory) if previous.model == spec.model else None


def fit(
    spec: TaskSpec,
    data: Dataset,
    evaluator: Evaluator,
    *,
    validation: Dataset | None = None,
    progress: Callable[[int], None] | None = None,
    activate: bool = True,
) -> FitResult:
    """Train the head on `evaluator`'s features; with validation data that has an out-of-scope
    label, also choose the confidence below which the task abstains. The version carries the
    evaluator's LoRA adapter, if it applies one: the head belongs to its features. `activate=False`
    leaves the new version unused until it is promoted (a candidate that must pass a gate)."""
    rows = [ex for ex in data.examples if ex.label is not None]
    options = spec.classify
    extractor = FeatureExtractor(evaluator, options.feature_prompt, options.layers, options.features_pooling)
    features = extractor.extract([ex.text for ex in rows], progress=progress)
    labels = [ex.label for ex in rows]
    head, report = train_head(features, labels)  # type: ignore[arg-type]
    directory = version_dir(spec)
    if validation is not None and validation.oos_label:
        spec = choose_out_of_scope(spec, directory, head, extractor, features, labels, validation, progress)  # type: ignore[arg-type]
    head.save(directory / HEAD_FILE)
    adapter = evaluator.adapter
    if adapter is not None and adapter.path.resolve() != (directory / ADAPTER_FILE).resolve():
        copy_durably(adapter.path, directory / ADAPTER_FILE)
    check_adapter(spec, directory, evaluator)  # an adapter already there must be the one the features came from
    saved = save_task(spec)
    if activate:
        make_active(spec.name, spec.version, reason="fit")
    return FitResult(spec, saved, report)
