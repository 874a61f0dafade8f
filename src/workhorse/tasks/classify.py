"""The `classify` kind.

`head` mode: features from one forward pass (see features.py) into a trained linear head.
`score` mode (no training data): the instructions and the label list form a cached prefix; the
item follows, then an answer cue, and each label is scored by the model's probability of
starting its answer with that label's first token, renormalised over the labels (one forward
pass per item). Labels that share a first token tie: on BANKING77, whose labels often start
alike (`card_…`), that leaves score mode at 6 %.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from workhorse.engine import EvalRequest, Evaluator
from workhorse.errors import TaskNotTrainedError
from workhorse.tasks.answer import LocalAnswer
from workhorse.tasks.features import MAX_ITEM_TOKENS, FeatureExtractor
from workhorse.tasks.head import LinearHead
from workhorse.tasks.oos import OOS_FILE, NeighbourDetector
from workhorse.tasks.spec import TaskSpec

HEAD_FILE = "head.npz"


@dataclass
class Prediction:
    label: str | list[str]
    confidence: float
    probabilities: dict[str, float] = field(default_factory=dict)
    prompt_tokens: int | None = None


def _answer(spec: TaskSpec, labels: Sequence[str], probs: np.ndarray, typicality: float | None = None) -> Prediction:
    """The prediction for one item; `typicality` (the neighbours detector's score) replaces the
    top probability as the abstention score when given."""
    options = spec.classify
    order = np.argsort(-probs)
    distribution = {labels[i]: float(probs[i]) for i in order}
    top = int(order[0])
    if options.multi_label:
        chosen = [labels[i] for i in order if probs[i] >= options.threshold] or [labels[top]]
        return Prediction(chosen, float(probs[top]), distribution)
    in_scope_score = probs[top] if typicality is None else typicality
    if options.out_of_scope and in_scope_score < options.out_of_scope.threshold:
        return Prediction(options.out_of_scope.label, float(1 - probs[top]), distribution)
    return Prediction(labels[top], float(probs[top]), distribution)


class HeadClassifier:
    def __init__(self, spec: TaskSpec, directory: Path, evaluator: Evaluator) -> None:
        path = directory / HEAD_FILE
        if not path.is_file():
            raise TaskNotTrainedError(
                f"task {spec.name!r} (v{spec.version}) is in head mode but has no trained head",
                f"train one: workhorse fit DATA --task {spec.name}",
            )
        self.spec = spec
        self.head = LinearHead.load(path)
        options = spec.classify
        self.features = FeatureExtractor(evaluator, options.feature_prompt, options.layers, options.pooling)
        self.detector = None
        if options.out_of_scope and options.out_of_scope.detector == "neighbours":
            if not (directory / OOS_FILE).is_file():
                raise TaskNotTrainedError(
                    f"task {spec.name!r} (v{spec.version}) uses the neighbours out-of-scope detector but has no {OOS_FILE}",
                    f"refit it with validation data: workhorse fit DATA --task {spec.name} --validation DATA",
                )
            self.detector = NeighbourDetector.load(directory / OOS_FILE)

    def classify(self, texts: Sequence[str]) -> list[Prediction]:
        tokens: list[int] = []
        features = self.features.extract(texts, token_counts=tokens)
        probs = self.head.predict_proba(features)
        if self.detector is None:
            predictions = [_answer(self.spec, self.head.labels, row) for row in probs]
        else:
            typicality = self.detector.typicality(self.head, features, probs)
            predictions = [_answer(self.spec, self.head.labels, row, float(t)) for row, t in zip(probs, typicality, strict=True)]
        for prediction, count in zip(predictions, tokens, strict=True):
            prediction.prompt_tokens = count
        return predictions


class ScoreClassifier:
    def __init__(self, spec: TaskSpec, evaluator: Evaluator) -> None:
        self.spec = spec
        self.evaluator = evaluator
        model = evaluator.model
        self.labels = spec.label_names
        listing = "\n".join(
            f"- {label.name}" + (f": {label.description}" if label.description else "") for label in spec.labels
        )
        shots = "".join(f"Input: {ex.input}\nLabel: {ex.output}\n\n" for ex in spec.examples)
        header = (spec.instructions or "Classify the input with exactly one label.") + f"\n\nLabels:\n{listing}\n\n{shots}"
        self._prefix = model.tokenize(header + "Input:")
        self._cue = model.tokenize("\nLabel:", add_special=False)
        # The first token of " <label>" decides; labels sharing it tie (see the module docstring).
        self._first = np.array([model.tokenize(" " + name, add_special=False)[0] for name in self.labels])

    def classify(self, texts: Sequence[str]) -> list[Prediction]:
        model = self.evaluator.model
        requests = [
            EvalRequest(
                self._prefix + model.tokenize(" " + t, add_special=False)[:MAX_ITEM_TOKENS] + self._cue,
                prefix_len=len(self._prefix),
                logits_at=[-1],
            )
            for t in texts
        ]
        predictions = []
        for result in self.evaluator.evaluate(requests):
            assert result.logits is not None
            scores = result.logits[0][self._first].astype(np.float64)
            probs = np.exp(scores - scores.max())
            prediction = _answer(self.spec, self.labels, probs / probs.sum())
            prediction.prompt_tokens = result.n_tokens
            predictions.append(prediction)
        return predictions


def make_classifier(spec: TaskSpec, directory: Path | None, evaluator: Evaluator) -> HeadClassifier | ScoreClassifier:
    if spec.classify.mode == "head":
        if directory is None:
            raise TaskNotTrainedError(
                f"task {spec.name!r} is in head mode but was loaded from a file, not the task store",
                f"train it into the store: workhorse fit DATA --task {spec.name}",
            )
        return HeadClassifier(spec, directory, evaluator)
    return ScoreClassifier(spec, evaluator)


class ClassifyTask:
    """Answers are labels with their confidence and the `top_k` most probable labels."""

    def __init__(self, spec: TaskSpec, directory: Path | None, evaluator: Evaluator, *, top_k: int = 5) -> None:
        self.spec = spec
        self.classifier = make_classifier(spec, directory, evaluator)
        self.top_k = top_k

    def run(self, texts: Sequence[str]) -> list[LocalAnswer]:
        return [
            LocalAnswer(p.label, p.confidence, {"probabilities": dict(list(p.probabilities.items())[: self.top_k])},
                        prompt_tokens=p.prompt_tokens, completion_tokens=0)
            for p in self.classifier.classify(texts)
        ]
