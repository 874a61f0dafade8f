"""`workhorse fit`: labelled data in, a trained classification head stored as a new task version."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workhorse.errors import TaskError, TaskNotFoundError
from workhorse.evals.datasets import Dataset
from workhorse.tasks.classify import HEAD_FILE
from workhorse.tasks.features import Evaluator, FeatureExtractor
from workhorse.tasks.head import TrainReport, train_head
from workhorse.tasks.spec import ClassifyOptions, LabelSpec, OutOfScope, TaskSpec
from workhorse.tasks.store import load_task, next_version, save_task, version_dir


@dataclass(frozen=True)
class FitResult:
    spec: TaskSpec
    directory: Path
    report: TrainReport


def task_for_data(name: str, data: Dataset, *, model: str | None, prompt: str | None, layers: list[int] | None) -> TaskSpec:
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
    if prompt is not None:
        options = ClassifyOptions.model_validate(options.model_dump() | {"feature_prompt": prompt})
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


def fit(
    spec: TaskSpec,
    data: Dataset,
    evaluator: Evaluator,
    *,
    validation: Dataset | None = None,
    progress: Callable[[int], None] | None = None,
) -> FitResult:
    """Train the head; with validation data that has an out-of-scope label, also choose the
    confidence below which the task abstains."""
    rows = [ex for ex in data.examples if ex.label is not None]
    extractor = FeatureExtractor(evaluator, spec.classify.feature_prompt, spec.classify.layers)
    features = extractor.extract([ex.text for ex in rows], progress=progress)
    head, report = train_head(features, [ex.label for ex in rows])  # type: ignore[misc]
    oos = validation.oos_label if validation else None
    if validation is not None and oos:
        val_probs = head.predict_proba(extractor.extract([ex.text for ex in validation.examples], progress=progress))
        threshold = choose_oos_threshold(val_probs, head.labels, [ex.label for ex in validation.examples], oos)
        spec = spec.model_copy(
            update={"classify": spec.classify.model_copy(update={"out_of_scope": OutOfScope(label=oos, threshold=threshold)})}
        )
    head.save(version_dir(spec) / HEAD_FILE)
    return FitResult(spec, save_task(spec), report)


def choose_oos_threshold(probs: np.ndarray, labels: list[str], truth: list[str | None], oos: str) -> float:
    """The abstention threshold maximising the mean of in-scope accuracy and out-of-scope recall
    on validation data (a prediction of the `oos` class itself also counts as abstaining)."""
    truth_arr = np.array([t or "" for t in truth])
    top = probs.max(axis=1)
    predicted = np.array(labels)[probs.argmax(axis=1)]
    is_oos = truth_arr == oos
    if not is_oos.any() or is_oos.all():
        return 0.0
    best_t, best_score = 0.0, -1.0
    for t in np.linspace(0.0, 0.95, 96):
        answer = np.where((top < t) | (predicted == oos), oos, predicted)
        score = ((answer == truth_arr)[~is_oos].mean() + (answer == oos)[is_oos].mean()) / 2
        if score > best_score:
            best_t, best_score = float(t), score
    return best_t
