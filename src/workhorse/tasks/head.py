"""A calibrated linear head over features: trained with scikit-learn, run with numpy.

Training standardises the features, picks the regularisation strength on a held-out tenth,
fits a multinomial logistic regression on everything, and sets a softmax temperature on the
held-out tenth so that confidences mean what they say (fit with the held-out model, whose
predictions on that tenth are honest). The stored head is a few arrays (`head.npz`): no pickle,
and inference needs nothing but numpy.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workhorse.tasks.store import write_durably

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
        return softmax(self.logits(np.atleast_2d(features)) / self.temperature)

    def save(self, path: Path) -> None:
        save_arrays(path, mean=self.mean, scale=self.scale, coef=self.coef, intercept=self.intercept,
                    temperature=np.array(self.temperature), labels=np.array(json.dumps(self.labels)))

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
    """For a training set: C and the temperature are chosen on a held-out tenth."""
    y, classes = _targets(labels)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    n_hold = max(len(classes), len(y) // 10)
    hold, fit = order[:n_hold], order[n_hold:]
    mean, scale = _standardiser(features[fit])
    best: tuple[float, float, LinearHead] | None = None
    for c in C_GRID:
        head = _fit(features, y, fit, classes, c, mean, scale)
        accuracy = float((head.logits(features[hold]).argmax(axis=1) == y[hold]).mean())
        if best is None or accuracy > best[0]:
            best = (accuracy, c, head)
    assert best is not None
    accuracy, c, held_out_model = best
    temperature = fit_temperature(held_out_model.logits(features[hold]), y[hold])
    final = _fit(features, y, np.arange(len(y)), classes, c, mean, scale)
    final.temperature = temperature
    return final, TrainReport(len(y), len(classes), c, accuracy, temperature)


# With no held-out prediction to learn a temperature from (one example per label), the head's
# confidence is tempered this much: a handful of examples cannot vouch for a sharp answer.
UNCALIBRATED_TEMPERATURE = 4.0


def train_head_cross_validated(features: np.ndarray, labels: Sequence[str], *, max_folds: int = 5) -> tuple[LinearHead, TrainReport]:
    """For a few examples per label. Linear discriminant analysis with a shrunk covariance
    (Ledoit-Wolf: the shrinkage comes from the data, nothing to tune) suits many dimensions and
    few rows better than a logistic regression, and fits in a fraction of its time. The
    temperature is chosen on out-of-fold predictions for every example: each label's examples are
    dealt round-robin into the folds, so a fold holds out at most one example of a label that has few."""
    y, classes = _targets(labels)
    folds = _folds(y, min(max_folds, int(np.bincount(y).max())))
    mean, scale = _standardiser(features)
    final = _fit_discriminant(features, y, np.arange(len(y)), classes, mean, scale)
    if folds.max() == 0:  # one example per label: nothing can be held out
        final.temperature = UNCALIBRATED_TEMPERATURE
        return final, TrainReport(len(y), len(classes), 0.0, float("nan"), final.temperature)
    out_of_fold = np.empty((len(y), len(classes)), dtype=np.float32)
    for fold in range(folds.max() + 1):
        held = folds == fold
        out_of_fold[held] = _fit_discriminant(features, y, np.flatnonzero(~held), classes, mean, scale).logits(features[held])
    final.temperature = fit_temperature(out_of_fold, y)
    accuracy = float((out_of_fold.argmax(axis=1) == y).mean())
    return final, TrainReport(len(y), len(classes), 0.0, accuracy, final.temperature)


def _fit_discriminant(features: np.ndarray, y: np.ndarray, rows: np.ndarray, classes: list[str],
                      mean: np.ndarray, scale: np.ndarray) -> LinearHead:
    """Shrinkage LDA on `rows`, as a head over every label (labels absent from `rows` never win).
    LDA needs more rows than labels; with one row per label a logistic regression stands in."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    if len(rows) <= len(np.unique(y[rows])):
        return _fit(features, y, rows, classes, C_GRID[-1], mean, scale)

    lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")
    with warnings.catch_warnings():  # a label with one example warns that its covariance is a single point
        warnings.simplefilter("ignore", UserWarning)
        lda.fit((features[rows] - mean) / scale, y[rows])
    return _as_head(lda.classes_, lda.coef_, lda.intercept_, classes, mean, scale)


def _targets(labels: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Label indices into the sorted label names, and those names."""
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise ValueError("training a head needs at least two labels")
    index = {label: i for i, label in enumerate(classes)}
    return np.array([index[label] for label in labels]), classes


def _folds(y: np.ndarray, n_folds: int) -> np.ndarray:
    """Each row's fold: a label's rows go to folds 0, 1, 2, … in turn."""
    folds = np.zeros(len(y), dtype=np.int64)
    for label in np.unique(y):
        rows = np.flatnonzero(y == label)
        folds[rows] = np.arange(len(rows)) % n_folds
    return folds


def _standardiser(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return features.mean(axis=0), features.std(axis=0) + 1e-6


def _fit(features: np.ndarray, y: np.ndarray, rows: np.ndarray, classes: list[str], c: float,
         mean: np.ndarray, scale: np.ndarray) -> LinearHead:
    """A logistic regression on `rows`, as a head over every label (labels absent from `rows` never win)."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=c, max_iter=1000, tol=1e-3)
    clf.fit((features[rows] - mean) / scale, y[rows])
    return _as_head(clf.classes_, clf.coef_, clf.intercept_, classes, mean, scale)


def _as_head(fitted: np.ndarray, weights: np.ndarray, biases: np.ndarray, classes: list[str],
             mean: np.ndarray, scale: np.ndarray) -> LinearHead:
    """A head over every label from a linear model fitted on the labels `fitted` (indices into `classes`)."""
    if len(fitted) == 2:  # scikit-learn stores one row: p(second) = sigmoid(w·x + b)
        weights, biases = np.vstack([np.zeros_like(weights[0]), weights[0]]), np.array([0.0, biases[0]])
    coef = np.zeros((len(classes), weights.shape[1]), dtype=np.float32)
    intercept = np.full(len(classes), -1e4, dtype=np.float32)
    for i, label in enumerate(fitted):
        coef[label], intercept[label] = weights[i], biases[i]
    return LinearHead(classes, mean.astype(np.float32), scale.astype(np.float32), coef, intercept)


def softmax(x: np.ndarray) -> np.ndarray:
    """Row-wise softmax of a 2-D array."""
    x = x - x.max(axis=1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=1, keepdims=True)


def save_arrays(path: Path, **arrays: np.ndarray) -> None:
    """A trained part as an `.npz` (no pickle), replacing `path` durably: a crash leaves the old
    file or the new one (see `write_durably`)."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_durably(path, buffer.getvalue())


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The temperature minimising held-out negative log-likelihood (a 1-D grid search)."""
    best_t, best_nll = 1.0, np.inf
    # Up to 256: a discriminant fitted on a few examples per label has logits in the hundreds.
    for t in np.exp(np.linspace(np.log(0.25), np.log(256.0), 100)):
        p = softmax(logits / t)
        nll = -np.mean(np.log(p[np.arange(len(y)), y] + 1e-12))
        if nll < best_nll:
            best_t, best_nll = float(t), nll
    return best_t
