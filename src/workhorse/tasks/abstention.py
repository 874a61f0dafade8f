"""When a classify task abstains: choosing its out-of-scope detector and threshold on validation
rows (the scores and the choice itself are `oos`), as `fit` does for a new head, or again for a
trained version (`workhorse tasks abstain`)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import numpy as np

from workhorse.engine import Evaluator
from workhorse.errors import TaskError
from workhorse.evals.datasets import Dataset
from workhorse.tasks.classify import HEAD_FILE
from workhorse.tasks.features import FeatureExtractor
from workhorse.tasks.head import LinearHead
from workhorse.tasks.oos import OOS_FILE, Calibration, NeighbourDetector, calibrate, in_scope_memory
from workhorse.tasks.spec import OutOfScope, TaskSpec
from workhorse.tasks.store import save_revision

log = logging.getLogger(__name__)


def keeping_recall(spec: TaskSpec, min_recall: float | None) -> TaskSpec:
    """`spec` set to keep out-of-scope recall at `min_recall` when it next chooses where to
    abstain (None: as it is; a task that did not abstain gets the default out-of-scope label)."""
    current = spec.classify.out_of_scope
    if min_recall is None and current is not None:
        return spec
    kept = (current or OutOfScope()).model_copy(update={"min_recall": min_recall} if min_recall is not None else {})
    return spec.model_copy(update={"classify": spec.classify.model_copy(update={"out_of_scope": kept})})


def with_out_of_scope_rows(data: Dataset, spec: TaskSpec) -> Dataset:
    """`data` knowing its out-of-scope label: a dataset's own (clinc150), else the task's, when
    some of its rows carry it (a file of the user's)."""
    if data.oos_label or spec.classify.out_of_scope is None:
        return data
    label = spec.classify.out_of_scope.label
    return replace(data, oos_label=label) if any(ex.label == label for ex in data.examples) else data


def choose_out_of_scope(spec: TaskSpec, directory: Path, head: LinearHead, extractor: FeatureExtractor, features: np.ndarray,
                        labels: Sequence[str], validation: Dataset, progress: Callable[[int], None] | None = None) -> TaskSpec:
    """`spec` abstaining as chosen on `validation` (rows with an out-of-scope label) for this head
    on these training features (`abstention`). A neighbours detector is saved in `directory`."""
    oos = validation.oos_label
    assert oos, "validation rows without an out-of-scope label"
    val_features = extractor.extract([ex.text for ex in validation.examples], progress=progress)
    spec, calibration = abstention(spec, head, in_scope_memory(head, features, labels, oos), val_features, validation)
    save_detector(calibration.detector, directory)
    return spec


def abstention(spec: TaskSpec, head: LinearHead, memory: np.ndarray | None, val_features: np.ndarray,
               validation: Dataset) -> tuple[TaskSpec, Calibration]:
    """`spec` with the out-of-scope detector and threshold `oos.calibrate` chooses on
    `validation`'s features (the spec's `min_recall`, if any, kept), and that choice."""
    oos = validation.oos_label
    assert oos, "validation rows without an out-of-scope label"
    current = spec.classify.out_of_scope
    min_recall = current.min_recall if current else None
    calibration = calibrate(head, memory, val_features, [ex.label for ex in validation.examples], oos, min_recall)
    if min_recall is not None and calibration.validation_score < 0:
        log.warning("no threshold keeps out-of-scope recall at %.2f with 95 %% confidence on %d rows of %s:%s; the "
                    "highest recall there is %.3f", min_recall, len(validation.examples), validation.name,
                    validation.split, calibration.recall)
    out_of_scope = OutOfScope(label=oos, detector="neighbours" if calibration.detector else "confidence",
                              threshold=calibration.threshold, min_recall=min_recall)
    return spec.model_copy(update={"classify": spec.classify.model_copy(update={"out_of_scope": out_of_scope})}), calibration


def save_detector(detector: NeighbourDetector | None, directory: Path) -> None:
    """A version's out-of-scope detector in its folder; none removes one copied from an earlier version."""
    if detector is not None:
        detector.save(directory / OOS_FILE)
    else:
        (directory / OOS_FILE).unlink(missing_ok=True)


class Abstained(NamedTuple):
    directory: Path  # the new version's folder
    out_of_scope: OutOfScope
    calibration: Calibration  # on the validation rows


def abstain_again(spec: TaskSpec, directory: Path, validation: Dataset, evaluator: Evaluator,
                  progress: Callable[[int], None] | None = None) -> Abstained:
    """Choose again where the trained version `spec` (in `directory`) abstains, on `validation`
    (the spec's `min_recall` as it is given), without retraining: its head, and the training items
    its neighbours detector remembers (without one, the confidence alone). Saved as the next
    version, which becomes active."""
    if spec.kind != "classify" or not (directory / HEAD_FILE).is_file():
        raise TaskError(f"task {spec.name} v{spec.version} has no trained head to abstain with",
                        "train one first: workhorse fit DATA --task NAME")
    spec = keeping_recall(spec, None)
    validation = with_out_of_scope_rows(validation, spec)
    if not validation.oos_label:
        raise TaskError(f"{validation.name}:{validation.split} has no out-of-scope rows to choose a threshold on",
                        f"give validation rows labelled {spec.classify.out_of_scope.label!r} among the others, "  # type: ignore[union-attr]
                        "such as clinc150:val")
    head = LinearHead.load(directory / HEAD_FILE)
    memory = NeighbourDetector.load(directory / OOS_FILE).memory if (directory / OOS_FILE).is_file() else None
    options = spec.classify
    extractor = FeatureExtractor(evaluator, options.feature_prompt, options.layers, options.features_pooling)
    features = extractor.extract([ex.text for ex in validation.examples], progress=progress)
    revised, calibration = abstention(spec, head, memory, features, validation)
    saved = save_revision(revised, directory, write=lambda folder: save_detector(calibration.detector, folder))
    return Abstained(saved, revised.classify.out_of_scope, calibration)  # type: ignore[arg-type]
