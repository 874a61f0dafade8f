"""A calibrated linear head over features: trained with scikit-learn, run with numpy.

Training standardises the features, picks the regularisation strength on a held-out tenth,
fits a multinomial logistic regression on everything, and sets a softmax temperature on the
held-out tenth so that confidences mean what they say (fit with the held-out model, whose
predictions on that tenth are honest). The stored head is a few arrays (`head.npz`): no pickle,
and inference needs nothing but numpy.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

C_GRID = (0.02, 0.05, 0.2, 1.0)


@dataclass
class LinearHead:
    labels: list[str]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray  # (n_labels, dim)
    intercept: np.ndarray  # (n_labels,)
    temperature: float = 1.0

    def logits(self, features: np.ndarray) -> np.ndarray:
        z = (features - self.mean) / self.scale
        return z @ self.coef.T + self.intercept

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        return _softmax(self.logits(np.atleast_2d(features)) / self.temperature)

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(
            tmp,
            mean=self.mean,
            scale=self.scale,
            coef=self.coef,
            intercept=self.intercept,
            temperature=np.array(self.temperature),
            labels=np.array(json.dumps(self.labels)),
        )
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> LinearHead:
        with np.load(path, allow_pickle=False) as data:
            return cls(
                labels=json.loads(str(data["labels"])),
                mean=data["mean"],
                scale=data["scale"],
                coef=data["coef"],
                intercept=data["intercept"],
                temperature=float(data["temperature"]),
            )


@dataclass(frozen=True)
class TrainReport:
    n_train: int
    n_labels: int
    c: float
    holdout_accuracy: float
    temperature: float


def train_head(features: np.ndarray, labels: Sequence[str], *, seed: int = 0) -> tuple[LinearHead, TrainReport]:
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(labels)
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise ValueError("training a head needs at least two labels")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    n_hold = max(len(classes), len(y) // 10)
    hold, fit = order[:n_hold], order[n_hold:]
    mean = features[fit].mean(axis=0)
    scale = features[fit].std(axis=0) + 1e-6

    def model(c: float, rows: np.ndarray) -> LinearHead:
        clf = LogisticRegression(C=c, max_iter=1000, tol=1e-3)
        clf.fit((features[rows] - mean) / scale, y[rows])
        coef = np.zeros((len(classes), features.shape[1]), dtype=np.float32)
        intercept = np.full(len(classes), -1e4, dtype=np.float32)  # labels absent from `rows` never win
        weights, biases = clf.coef_, clf.intercept_
        if len(clf.classes_) == 2:  # scikit-learn stores one row: p(second) = sigmoid(w·x + b)
            weights, biases = np.vstack([np.zeros_like(weights[0]), weights[0]]), np.array([0.0, biases[0]])
        for i, label in enumerate(clf.classes_):
            j = classes.index(label)
            coef[j], intercept[j] = weights[i], biases[i]
        return LinearHead(classes, mean.astype(np.float32), scale.astype(np.float32), coef, intercept)

    index = {label: i for i, label in enumerate(classes)}
    y_hold = np.array([index[label] for label in y[hold]])
    best: tuple[float, float, LinearHead] | None = None
    for c in C_GRID:
        head = model(c, fit)
        accuracy = float((head.logits(features[hold]).argmax(axis=1) == y_hold).mean())
        if best is None or accuracy > best[0]:
            best = (accuracy, c, head)
    assert best is not None
    accuracy, c, held_out_model = best
    temperature = _fit_temperature(held_out_model.logits(features[hold]), y_hold)
    final = model(c, np.arange(len(y)))
    final.temperature = temperature
    return final, TrainReport(len(y), len(classes), c, accuracy, temperature)


def _softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=1, keepdims=True)


def _fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The temperature minimising held-out negative log-likelihood (a 1-D grid search)."""
    best_t, best_nll = 1.0, np.inf
    for t in np.exp(np.linspace(np.log(0.25), np.log(8.0), 60)):
        p = _softmax(logits / t)
        nll = -np.mean(np.log(p[np.arange(len(y)), y] + 1e-12))
        if nll < best_nll:
            best_t, best_nll = float(t), nll
    return best_t
