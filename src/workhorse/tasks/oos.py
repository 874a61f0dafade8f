"""Out-of-scope detection: when should a classifier abstain?

The head's top probability alone separates out-of-scope items poorly: the head was trained to
spread probability over known labels, and an unknown request often lands confidently on one of
them. The `neighbours` detector adds how close the item sits to the training items (mean cosine
similarity to its k nearest in-scope neighbours, on the head's standardised features) and joins
the two signals as a weighted sum of z-scores. The weight and the abstention threshold are chosen
on validation data with out-of-scope rows; the score is reported as a *typicality*: the share of
in-scope validation items that score lower, so a threshold of 0.05 abstains on items less
typical than the least typical 5 % of in-scope requests.

By default the threshold maximises the mean of in-scope accuracy and out-of-scope recall on the
validation rows, which weighs each out-of-scope row as much as all the in-scope rows per
out-of-scope one: with few of them (CLINC150's validation split has 100 among 3,100) it turns
away many in-scope requests to catch the last few. A deployment that knows the recall it needs
sets `min_recall`: the threshold is then the one with the best in-scope accuracy whose recall is
at least that with 95 % confidence (the lower Wilson bound, one-sided), so that the few rows it
was chosen on are not taken at their word.

On CLINC150 (gemma3-270m features) this moved in-scope accuracy / out-of-scope recall from
84.8 % / 0.787 (confidence alone) to the figures in the README.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workhorse.tasks.head import LinearHead, save_arrays

OOS_FILE = "oos.npz"
NEIGHBOURS = 5
WEIGHTS = (0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)  # of the confidence; the rest goes to the neighbours
THRESHOLDS = np.linspace(0.0, 0.95, 96)
CONFIDENCE_Z = 1.645  # one-sided 95 % for the recall's lower bound under `min_recall`


@dataclass
class NeighbourDetector:
    memory: np.ndarray  # (n, dim) float32 unit vectors of the in-scope training items (float16 on disk)
    confidence_stats: tuple[float, float]  # mean, std of in-scope validation top probabilities
    neighbour_stats: tuple[float, float]  # mean, std of in-scope validation neighbour similarities
    weight: float  # of the confidence z-score; 1 - weight goes to the neighbour z-score
    reference: np.ndarray  # sorted combined scores of the in-scope validation items

    def typicality(self, head: LinearHead, features: np.ndarray, probs: np.ndarray) -> np.ndarray:
        combined = self._combined(_neighbour_similarity(self.memory, _unit(head, features)), probs.max(axis=1))
        return np.searchsorted(self.reference, combined) / len(self.reference)

    def _combined(self, similarity: np.ndarray, confidence: np.ndarray) -> np.ndarray:
        z_conf = (confidence - self.confidence_stats[0]) / self.confidence_stats[1]
        z_near = (similarity - self.neighbour_stats[0]) / self.neighbour_stats[1]
        return self.weight * z_conf + (1 - self.weight) * z_near

    def save(self, path: Path) -> None:
        save_arrays(path, memory=self.memory.astype(np.float16), confidence_stats=np.array(self.confidence_stats),
                    neighbour_stats=np.array(self.neighbour_stats), weight=np.array(self.weight), reference=self.reference)

    @classmethod
    def load(cls, path: Path) -> NeighbourDetector:
        with np.load(path, allow_pickle=False) as data:
            return cls(
                memory=data["memory"].astype(np.float32),
                confidence_stats=tuple(data["confidence_stats"].tolist()),
                neighbour_stats=tuple(data["neighbour_stats"].tolist()),
                weight=float(data["weight"]),
                reference=data["reference"],
            )


@dataclass(frozen=True)
class Calibration:
    detector: NeighbourDetector | None  # None: the confidence alone did best
    threshold: float
    # What the threshold was chosen for: the mean of in-scope accuracy and out-of-scope recall, or
    # under `min_recall` the in-scope accuracy (minus one where no threshold keeps the recall).
    validation_score: float
    in_scope_accuracy: float  # on the validation rows, at the threshold
    recall: float  # out-of-scope recall on the validation rows, at the threshold


def in_scope_memory(head: LinearHead, train_features: np.ndarray, train_labels: Sequence[str], oos: str) -> np.ndarray:
    """What the neighbours detector compares an item with: the in-scope training items."""
    return _unit(head, train_features[np.array(train_labels) != oos])


def calibrate(
    head: LinearHead,
    memory: np.ndarray | None,
    val_features: np.ndarray,
    val_truth: Sequence[str | None],
    oos: str,
    min_recall: float | None = None,
) -> Calibration:
    """Choose the detector, its weight and the threshold on the validation rows: those that
    maximise the mean of in-scope accuracy and out-of-scope recall, or with `min_recall` the best
    in-scope accuracy whose recall is at least that at 95 % confidence. `memory`
    (`in_scope_memory`): None considers the confidence alone."""
    truth = np.array([t or "" for t in val_truth])
    in_scope = truth != oos
    probs = head.predict_proba(val_features)
    predicted = np.array(head.labels)[probs.argmax(axis=1)]
    best = Calibration(None, *_best_threshold(probs.max(axis=1), predicted, truth, oos, min_recall))
    if in_scope.all() or not in_scope.any() or memory is None or not len(memory):
        return best
    similarity = _neighbour_similarity(memory, _unit(head, val_features))
    confidence = probs.max(axis=1)
    stats = [(float(s[in_scope].mean()), float(s[in_scope].std() + 1e-9)) for s in (confidence, similarity)]
    for weight in WEIGHTS:
        detector = NeighbourDetector(memory, stats[0], stats[1], weight, np.empty(0))
        combined = detector._combined(similarity, confidence)
        detector.reference = np.sort(combined[in_scope])
        typicality = np.searchsorted(detector.reference, combined) / len(detector.reference)
        candidate = Calibration(detector, *_best_threshold(typicality, predicted, truth, oos, min_recall))
        if candidate.validation_score > best.validation_score:
            best = candidate
    return best


def _best_threshold(score: np.ndarray, predicted: np.ndarray, truth: np.ndarray, oos: str,
                    min_recall: float | None) -> tuple[float, float, float, float]:
    """The threshold on `score` (abstain below it; a prediction of `oos` itself also abstains)
    as `calibrate` chooses it, with its validation score, in-scope accuracy and recall."""
    is_oos = truth == oos
    if not is_oos.any() or is_oos.all():
        return 0.0, 0.0, 0.0, 0.0
    best = (0.0, -math.inf, 0.0, 0.0)
    for t in THRESHOLDS:
        answer = np.where((score < t) | (predicted == oos), oos, predicted)
        accuracy = float((answer == truth)[~is_oos].mean())
        caught = int((answer == oos)[is_oos].sum())
        recall = caught / int(is_oos.sum())
        if min_recall is None:
            value = (accuracy + recall) / 2
        elif recall_lower_bound(caught, int(is_oos.sum())) >= min_recall:
            value = accuracy
        else:  # short of the recall: the closer the better, below any threshold that keeps it
            value = recall - 1.0
        if value > best[1]:
            best = (float(t), value, accuracy, recall)
    return best


def recall_lower_bound(caught: int, total: int, z: float = CONFIDENCE_Z) -> float:
    """The lower Wilson bound of a recall of `caught` out of `total`."""
    p = caught / total
    centre = p + z * z / (2 * total)
    spread = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
    return (centre - spread) / (1 + z * z / total)


def _unit(head: LinearHead, features: np.ndarray) -> np.ndarray:
    z = (np.atleast_2d(features) - head.mean) / head.scale
    return (z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def _neighbour_similarity(memory: np.ndarray, unit: np.ndarray, *, chunk: int = 256) -> np.ndarray:
    """Mean cosine similarity to the `NEIGHBOURS` most similar memory rows, per row of `unit`."""
    k = min(NEIGHBOURS, len(memory))
    out = np.empty(len(unit), dtype=np.float32)
    for start in range(0, len(unit), chunk):
        sims = unit[start : start + chunk] @ memory.T
        out[start : start + chunk] = np.partition(sims, -k, axis=1)[:, -k:].mean(axis=1)
    return out
