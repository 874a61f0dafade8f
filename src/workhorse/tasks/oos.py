"""Out-of-scope detection: when should a classifier abstain?

The head's top probability alone separates out-of-scope items poorly: the head was trained to
spread probability over known labels, and an unknown request often lands confidently on one of
them. The `neighbours` detector adds how close the item sits to the training items (mean cosine
similarity to its k nearest in-scope neighbours, on the head's standardised features) and joins
the two signals as a weighted sum of z-scores. The weight and the abstention threshold are chosen
on validation data with out-of-scope rows; the score is reported as a *typicality*: the share of
in-scope validation items that score lower, so a threshold of 0.05 abstains on items less
typical than the least typical 5 % of in-scope requests.

On CLINC150 (gemma3-270m features) this moved in-scope accuracy / out-of-scope recall from
84.8 % / 0.787 (confidence alone) to the figures in the README.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workhorse.tasks.head import LinearHead, save_arrays

OOS_FILE = "oos.npz"
NEIGHBOURS = 5
WEIGHTS = (0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)  # of the confidence; the rest goes to the neighbours
THRESHOLDS = np.linspace(0.0, 0.95, 96)


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
    validation_score: float  # mean of in-scope accuracy and out-of-scope recall at the threshold


def calibrate(
    head: LinearHead,
    train_features: np.ndarray,
    train_labels: Sequence[str],
    val_features: np.ndarray,
    val_truth: Sequence[str | None],
    oos: str,
) -> Calibration:
    """Choose the detector, its weight and the threshold that maximise the mean of in-scope
    accuracy and out-of-scope recall on the validation rows."""
    truth = np.array([t or "" for t in val_truth])
    in_scope = truth != oos
    probs = head.predict_proba(val_features)
    predicted = np.array(head.labels)[probs.argmax(axis=1)]
    confidence_only = _best_threshold(probs.max(axis=1), predicted, truth, oos)
    best = Calibration(None, *confidence_only)
    if in_scope.all() or not in_scope.any():
        return best
    memory = _unit(head, train_features[np.array(train_labels) != oos])
    similarity = _neighbour_similarity(memory, _unit(head, val_features))
    confidence = probs.max(axis=1)
    stats = [(float(s[in_scope].mean()), float(s[in_scope].std() + 1e-9)) for s in (confidence, similarity)]
    for weight in WEIGHTS:
        detector = NeighbourDetector(memory, stats[0], stats[1], weight, np.empty(0))
        combined = detector._combined(similarity, confidence)
        detector.reference = np.sort(combined[in_scope])
        typicality = np.searchsorted(detector.reference, combined) / len(detector.reference)
        threshold, score = _best_threshold(typicality, predicted, truth, oos)
        if score > best.validation_score:
            best = Calibration(detector, threshold, score)
    return best


def _best_threshold(score: np.ndarray, predicted: np.ndarray, truth: np.ndarray, oos: str) -> tuple[float, float]:
    """The threshold on `score` (abstain below it; a prediction of `oos` itself also abstains)
    maximising the mean of in-scope accuracy and out-of-scope recall."""
    is_oos = truth == oos
    if not is_oos.any() or is_oos.all():
        return 0.0, 0.0
    best_t, best_score = 0.0, -1.0
    for t in THRESHOLDS:
        answer = np.where((score < t) | (predicted == oos), oos, predicted)
        value = ((answer == truth)[~is_oos].mean() + (answer == oos)[is_oos].mean()) / 2
        if value > best_score:
            best_t, best_score = float(t), float(value)
    return best_t, best_score


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
