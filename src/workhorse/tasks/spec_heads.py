"""Classifiers built from the task spec alone, when the task loads: no `fit`, no data file.

`examples` mode: the labels carry a few example inputs, and a linear head is fitted on those
examples' features. With a handful of examples per label, the confidence temperature is chosen
on out-of-fold predictions for every example, so the confidence is measured, not assumed (see
`train_head_cross_validated`).

`descriptions` mode (zero-shot): each label is a prototype, the features of its name and
description (and of its examples, if some labels have them). An item gets the label whose
prototype is nearest by cosine, after the features are standardised by their spread over a
shipped set of ordinary sentences (`background/`): without it, a few dimensions that every
message shares decide the cosine. Measured on bitext_cs validation (27 intents, one-line
descriptions): 69.7 % against 31 % for score mode, at head mode's cost per item.

A built head is kept in the workhorse home (`heads/`), under a name derived from everything it
depends on (the model file, the feature options, the label texts), so a restart does not build it again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from workhorse.paths import heads_cache_dir
from workhorse.tasks.features import FeatureExtractor
from workhorse.tasks.head import LinearHead, save_arrays, softmax, train_head_cross_validated
from workhorse.tasks.spec import TaskSpec


def examples_head(spec: TaskSpec, extractor: FeatureExtractor) -> LinearHead:
    """The head fitted on `spec`'s label examples."""
    texts, labels = _examples(spec)

    def build() -> LinearHead:
        return train_head_cross_validated(extractor.extract(texts), labels)[0]

    return _cached("examples", [_features_key(spec, extractor), texts, labels], build, LinearHead.load)


@dataclass
class PrototypeHead:
    """Softmax over the cosines between an item's standardised features and each label's prototype."""

    labels: list[str]
    mean: np.ndarray
    scale: np.ndarray
    prototypes: np.ndarray  # (n_labels, dim), unit rows in the standardised space
    temperature: float

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        cosines = _unit((np.atleast_2d(features) - self.mean) / self.scale) @ self.prototypes.T
        return softmax(cosines / self.temperature)

    def save(self, path: Path) -> None:
        save_arrays(path, mean=self.mean, scale=self.scale, prototypes=self.prototypes,
                    temperature=np.array(self.temperature), labels=np.array(json.dumps(self.labels)))

    @classmethod
    def load(cls, path: Path) -> PrototypeHead:
        with np.load(path, allow_pickle=False) as data:
            return cls(json.loads(str(data["labels"])), data["mean"], data["scale"], data["prototypes"],
                       float(data["temperature"]))


def descriptions_head(spec: TaskSpec, extractor: FeatureExtractor) -> PrototypeHead:
    """The prototype head of `spec`'s labels (their names, descriptions and any examples)."""
    texts = {label.name: [_label_text(label.name, label.description)] for label in spec.labels}
    for name, examples in spec.examples_by_label().items():
        texts[name] += examples
    background = _background(spec.language)
    temperature = spec.classify.descriptions_temperature

    def build() -> PrototypeHead:
        spread = extractor.extract(background)
        mean, scale = spread.mean(axis=0), spread.std(axis=0) + 1e-6
        # Every label's texts in one batched pass, then each label's unit vectors averaged.
        units = _unit((extractor.extract([t for label in texts.values() for t in label]) - mean) / scale)
        ends = np.cumsum([len(label) for label in texts.values()])
        prototypes = np.stack([units[end - n : end].mean(axis=0) for n, end in zip(map(len, texts.values()), ends)])
        return PrototypeHead(list(texts), mean, scale, _unit(prototypes), temperature)

    key = [_features_key(spec, extractor), texts, background, temperature]
    return _cached("descriptions", key, build, PrototypeHead.load)


def _label_text(name: str, description: str) -> str:
    """What a label stands for, as text: `cancel_order` with its description → "cancel order: stop an order…"."""
    words = name.replace("_", " ").replace("-", " ").strip()
    return f"{words}: {description}" if description else words


def _background(language: str) -> list[str]:
    """Ordinary sentences in the task's language (English when there are none in it)."""
    folder = resources.files("workhorse.tasks") / "background"
    source = folder / f"{language}.txt"
    if not source.is_file():
        source = folder / "en.txt"
    return [line for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]


def _examples(spec: TaskSpec) -> tuple[list[str], list[str]]:
    pairs = [(text, label) for label, texts in spec.examples_by_label().items() for text in texts]
    return [text for text, _ in pairs], [label for _, label in pairs]


def _features_key(spec: TaskSpec, extractor: FeatureExtractor) -> list[object]:
    """What the features depend on: the model file (by path, size and time) and the feature options."""
    model = Path(extractor.evaluator.model.path).resolve()
    stat = model.stat()
    options = spec.classify
    return [str(model), stat.st_size, stat.st_mtime_ns, options.feature_prompt, options.features_pooling, options.layers]


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def _cached(kind: str, key: list[object], build: Callable, load: Callable):
    """`build()`, kept under a name derived from `key` (everything the head depends on)."""
    digest = hashlib.sha256(json.dumps(key, ensure_ascii=False, sort_keys=True).encode()).hexdigest()[:16]
    path = heads_cache_dir() / f"{kind}-{digest}.npz"
    if path.is_file():
        return load(path)
    head = build()
    head.save(path)
    return head
