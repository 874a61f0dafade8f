"""`examples` mode of the classify kind: a task whose labels carry a few example inputs is
classified by a linear head fitted on those examples' features when the task loads, with no
`fit` and no data file. With a handful of examples per label, the head's regularisation and its
confidence temperature are chosen on out-of-fold predictions for every example, so the
confidence is measured, not assumed (see `train_head_cross_validated`).

The fitted head is kept beside a stored task version, under a name derived from everything it
depends on, so a server restart does not fit it again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from workhorse.tasks.features import FeatureExtractor
from workhorse.tasks.head import LinearHead, train_head_cross_validated
from workhorse.tasks.spec import TaskSpec


def examples_head(spec: TaskSpec, extractor: FeatureExtractor, directory: Path | None) -> LinearHead:
    """The head for `spec`'s label examples: from the cache in `directory` when one fits, else fitted now."""
    texts, labels = _examples(spec)
    cached = directory / f"examples-head-{_fingerprint(spec, texts, labels)}.npz" if directory else None
    if cached is not None and cached.is_file():
        return LinearHead.load(cached)
    head, _ = train_head_cross_validated(extractor.extract(texts), labels)
    if cached is not None:
        head.save(cached)
    return head


def _examples(spec: TaskSpec) -> tuple[list[str], list[str]]:
    pairs = [(text, label) for label, texts in spec.examples_by_label().items() for text in texts]
    return [text for text, _ in pairs], [label for _, label in pairs]


def _fingerprint(spec: TaskSpec, texts: list[str], labels: list[str]) -> str:
    """What the head depends on: the model, the feature options and the examples."""
    options = spec.classify
    key = [spec.model, options.feature_prompt, options.pooling, options.layers, texts, labels]
    return hashlib.sha256(json.dumps(key, ensure_ascii=False).encode()).hexdigest()[:16]
