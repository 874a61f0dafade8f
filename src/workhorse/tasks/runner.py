"""One interface over every task kind: texts in, answers (with confidence) out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workhorse.tasks.classify import make_classifier
from workhorse.tasks.embed import Embedder
from workhorse.tasks.features import Evaluator
from workhorse.tasks.spec import TaskSpec
from workhorse.tasks.structured import StructuredGenerator


@dataclass
class Answer:
    answer: Any
    confidence: float | None = None
    details: dict[str, Any] = field(default_factory=dict)


class TaskRunner:
    def __init__(self, spec: TaskSpec, directory: Path, evaluator: Evaluator, *, top_k: int = 5) -> None:
        self.spec = spec
        self.top_k = top_k
        if spec.kind == "classify":
            self._classifier = make_classifier(spec, directory, evaluator)
        elif spec.kind == "embed":
            self._embedder = Embedder(spec, evaluator)
        elif spec.kind == "logs":
            from workhorse.logparse.task import LogTask

            self._logs = LogTask(spec, open_model=lambda: evaluator)
        else:
            self._generator = StructuredGenerator(spec, evaluator)

    def run(self, texts: Sequence[str]) -> list[Answer]:
        if self.spec.kind == "classify":
            return [
                Answer(p.label, p.confidence, {"probabilities": dict(list(p.probabilities.items())[: self.top_k])})
                for p in self._classifier.classify(texts)
            ]
        if self.spec.kind == "embed":
            return [Answer(vector.tolist()) for vector in self._embedder.embed(texts)]
        if self.spec.kind == "logs":  # one record per line: header fields, template, typed parameters
            return [Answer(record) for record in self._logs.records(texts)]
        return [
            Answer(a.value, a.confidence, {"valid": a.valid} | ({} if a.valid else {"raw": a.text}))
            for a in self._generator.run(texts)
        ]
