"""What a task kind answers for one item, before any escalation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class LocalAnswer:
    answer: Any
    confidence: float | None = None
    details: dict[str, Any] = field(default_factory=dict)  # per kind: top probabilities, validity, raw text
    prompt_tokens: int | None = None  # tokens the engine read for the item, its cached prefix included
    completion_tokens: int | None = None  # tokens it generated
