"""The `classify` kind.

`head` mode: features from one forward pass (see features.py) into a linear head trained by `fit`.
`examples` mode: the same, with the head fitted on the labels' examples when the task loads;
`descriptions` mode: the same features, nearest to the labels' names and descriptions (spec_heads.py).
`score` mode (no training data): the instructions and the label list form a cached prefix; the
item follows, then an answer cue, and each label is scored by the log-probability of its whole
name there (all its tokens, so labels that start alike, like BANKING77's `card_…`, do not tie).
The labels' prior in that prompt, measured on content-free inputs, is divided out (contextual
calibration), and a temperature keeps the confidence from claiming more than zero-shot scores
know. Items with nothing in them are flagged `content_free`, not labelled.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from workhorse.engine import EvalRequest, Evaluator
from workhorse.errors import TaskNotTrainedError
from workhorse.tasks.answer import LocalAnswer
from workhorse.tasks.features import MAX_ITEM_TOKENS, FeatureExtractor
from workhorse.tasks.head import LinearHead, softmax
from workhorse.tasks.oos import OOS_FILE, NeighbourDetector
from workhorse.tasks.spec import TaskSpec
from workhorse.tasks.spec_heads import PrototypeHead, descriptions_head, examples_head

HEAD_FILE = "head.npz"


@dataclass
class Prediction:
    label: str | list[str]
    confidence: float
    probabilities: dict[str, float] = field(default_factory=dict)
    prompt_tokens: int | None = None
    details: dict[str, object] = field(default_factory=dict)  # e.g. content_free: True for a refused item


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
    """A linear head over the features of one forward pass: trained by `fit` (head mode) or fitted
    on the spec's label examples when the task loads (examples mode)."""

    def __init__(self, spec: TaskSpec, head: LinearHead | PrototypeHead, features: FeatureExtractor,
                 detector: NeighbourDetector | None = None) -> None:
        self.spec = spec
        self.head = head
        self.features = features
        self.detector = detector

    def classify(self, texts: Sequence[str]) -> list[Prediction]:
        return with_refusals(self.spec, texts, self._classify)

    def _classify(self, texts: Sequence[str]) -> list[Prediction]:
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


# Inputs with nothing to classify. Their label distribution is the model's prior over the labels
# in this prompt (Zhao et al. 2021, "Calibrate before use"), which score mode divides out.
CONTENT_FREE_INPUTS = ("", "N/A", "[MASK]")
_CONTENT_FREE_WORDS = {"n/a", "na", "none", "null", "nil", "[mask]", "-"}


def is_content_free(text: str) -> bool:
    """An item with nothing to classify: no letter or digit, or a placeholder such as "N/A"."""
    return not any(ch.isalnum() for ch in text) or text.strip().lower() in _CONTENT_FREE_WORDS


def with_refusals(spec: TaskSpec, texts: Sequence[str], classify: Callable[[Sequence[str]], list[Prediction]]) -> list[Prediction]:
    """`classify` on the items with something in them; the others are refused, not labelled: any
    mode would answer them with its prior, confidently or not."""
    out_of_scope = spec.classify.out_of_scope
    refusal = out_of_scope.label if out_of_scope else None
    wanted = [i for i, text in enumerate(texts) if not is_content_free(text)]
    answers = dict(zip(wanted, classify([texts[i] for i in wanted]) if wanted else [], strict=True))
    return [answers.get(i) or Prediction(refusal, 0.0, {}, prompt_tokens=0, details={"content_free": True})  # type: ignore[arg-type]
            for i in range(len(texts))]


def label_requests(label_tokens: Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
    """The continuations to evaluate after the answer cue so that every label's tokens get a logit
    row: one path per label minus its last token, dropping a path that another one extends (its
    rows are that one's first rows, and each path takes a sequence slot). Returns the paths;
    single-token labels need only `()`."""
    paths: list[tuple[int, ...]] = []
    for tokens in sorted((tuple(t[:-1]) for t in label_tokens), key=len, reverse=True):
        if not any(p[: len(tokens)] == tokens for p in paths):
            paths.append(tokens)
    return paths


def label_logprobs(
    label_tokens: Sequence[Sequence[int]], rows: dict[tuple[int, ...], np.ndarray], column: dict[int, int]
) -> np.ndarray:
    """Each label's log-probability, summed over its tokens. `rows[node]` holds the log-probabilities
    of the label tokens (token → index: `column`) after the cue followed by the tokens `node` (the
    label trie's nodes)."""
    return np.array([sum(float(rows[tuple(tokens[:j])][column[tok]]) for j, tok in enumerate(tokens)) for tokens in label_tokens])


class ScoreClassifier:
    """Zero-shot: each label is scored by the log-probability of its whole name after the item and
    the answer cue, with the labels' prior (their scores on content-free inputs) divided out, and
    turned into probabilities at a temperature that keeps the confidence honest (see
    `ClassifyOptions.score_temperature`)."""

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
        self._label_tokens = [model.tokenize(" " + name, add_special=False) for name in self.labels]
        self._paths = label_requests(self._label_tokens)
        self._vocab = sorted({tok for tokens in self._label_tokens for tok in tokens})  # all a score reads
        self._column = {tok: i for i, tok in enumerate(self._vocab)}
        self._lengths = np.array([len(t) for t in self._label_tokens], dtype=np.float64)
        options = spec.classify
        self._prior = np.zeros(len(self.labels))
        if options.score_calibration == "contextual":
            raw = self._label_scores(list(CONTENT_FREE_INPUTS))
            # The mean of the content-free label distributions, in log space.
            mean = softmax(np.stack(raw)).mean(axis=0)
            self._prior = np.log(np.maximum(mean, 1e-300))

    def _item_tokens(self, text: str) -> list[int]:
        model = self.evaluator.model
        item = model.tokenize(" " + text, add_special=False)[:MAX_ITEM_TOKENS] if text else []
        return self._prefix + item + self._cue

    def _label_scores(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Per item, the labels' whole-name log-probabilities (length-normalised when the options
        say so)."""
        return self._scores_after([self._item_tokens(t) for t in texts])

    def _scores_after(self, bases: Sequence[list[int]]) -> list[np.ndarray]:
        """`_label_scores` for items already made into prompts (`_item_tokens`). One request per
        item, on the instructions' snapshot, with the label paths as its branches: the item and
        every label-trie node are evaluated once, in one pass, and each node gives one logits row
        (a vocabulary-sized projection, 262k rows on Gemma 3, the bulk of an item's cost)."""
        requests = [EvalRequest(base, prefix_len=len(self._prefix), branches=self._paths, logprobs_of=self._vocab)
                    for base in bases]
        scores = []
        for result in self.evaluator.evaluate(requests):
            raw = label_logprobs(self._label_tokens, result.branch_logits, self._column)
            if self.spec.classify.score_length_norm:
                raw = raw / self._lengths
            scores.append(raw)
        return scores

    def distributions(self, texts: Sequence[str], temperature: float = 1.0) -> np.ndarray:
        """The calibrated label distribution of each item at `temperature` (rows: items)."""
        return self._calibrated(self._label_scores(texts), temperature)

    def _calibrated(self, scores: Sequence[np.ndarray], temperature: float) -> np.ndarray:
        return softmax((np.stack(scores) - self._prior) / temperature)

    def classify(self, texts: Sequence[str]) -> list[Prediction]:
        return with_refusals(self.spec, texts, self._classify)

    def _classify(self, texts: Sequence[str]) -> list[Prediction]:
        bases = [self._item_tokens(text) for text in texts]  # tokenized once: scored and counted
        probs = self._calibrated(self._scores_after(bases), self.spec.classify.score_temperature)
        predictions = []
        for base, row in zip(bases, probs, strict=True):
            prediction = _answer(self.spec, self.labels, row)
            prediction.prompt_tokens = len(base)
            predictions.append(prediction)
        return predictions


def make_classifier(spec: TaskSpec, directory: Path | None, evaluator: Evaluator) -> HeadClassifier | ScoreClassifier:
    options = spec.classify
    if options.mode == "score":
        return ScoreClassifier(spec, evaluator)
    features = FeatureExtractor(evaluator, options.feature_prompt, options.layers, options.features_pooling)
    if options.mode == "examples":
        return HeadClassifier(spec, examples_head(spec, features), features)
    if options.mode == "descriptions":
        return HeadClassifier(spec, descriptions_head(spec, features), features)
    return _trained_classifier(spec, directory, features)


def _trained_classifier(spec: TaskSpec, directory: Path | None, features: FeatureExtractor) -> HeadClassifier:
    """Head mode: the head `fit` stored beside this task version (and its out-of-scope detector)."""
    if directory is None:
        raise TaskNotTrainedError(
            f"task {spec.name!r} is in head mode but was loaded from a file, not the task store",
            f"train it into the store: workhorse fit DATA --task {spec.name}",
        )
    if not (directory / HEAD_FILE).is_file():
        raise TaskNotTrainedError(
            f"task {spec.name!r} (v{spec.version}) is in head mode but has no trained head",
            f"train one: workhorse fit DATA --task {spec.name}",
        )
    detector = None
    out_of_scope = spec.classify.out_of_scope
    if out_of_scope and out_of_scope.detector == "neighbours":
        if not (directory / OOS_FILE).is_file():
            raise TaskNotTrainedError(
                f"task {spec.name!r} (v{spec.version}) uses the neighbours out-of-scope detector but has no {OOS_FILE}",
                f"refit it with validation data: workhorse fit DATA --task {spec.name} --validation DATA",
            )
        detector = NeighbourDetector.load(directory / OOS_FILE)
    return HeadClassifier(spec, LinearHead.load(directory / HEAD_FILE), features, detector)


class ClassifyTask:
    """Answers are labels with their confidence and the `top_k` most probable labels."""

    def __init__(self, spec: TaskSpec, directory: Path | None, evaluator: Evaluator, *, top_k: int = 5) -> None:
        self.spec = spec
        self.classifier = make_classifier(spec, directory, evaluator)
        self.top_k = top_k

    def run(self, texts: Sequence[str]) -> list[LocalAnswer]:
        return [
            LocalAnswer(p.label, p.confidence, {"probabilities": dict(list(p.probabilities.items())[: self.top_k])} | p.details,
                        prompt_tokens=p.prompt_tokens, completion_tokens=0)
            for p in self.classifier.classify(texts)
        ]
