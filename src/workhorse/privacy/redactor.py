"""Redaction: replace what the detectors find with typed placeholders, and put the originals back.

    redaction = redact("Mail alice@example.com")    # .text == "Mail EMAIL_1"
    restore(answer_from_upstream, redaction.mapping)

Placeholders are plain tokens, ``KIND_n``: hosted models copy them through prose and JSON intact,
and the kind tells the model what stood there. A `Redactor` applies a task's privacy policy and keeps
one mapping for every text of an exchange (a chat), so a value keeps its placeholder across turns.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from workhorse.errors import PrivacyPolicyError
from workhorse.privacy.detectors import detect

PrivacyPolicy = Literal["local_only", "redact", "allow"]
POLICIES: tuple[PrivacyPolicy, ...] = get_args(PrivacyPolicy)


@dataclass
class Redaction:
    text: str
    mapping: dict[str, str]  # placeholder -> original
    counts: dict[str, int]  # kind -> how many distinct values

    def restore(self, answer: str) -> str:
        return restore(answer, self.mapping)


def _placeholder_pattern(placeholders: Iterable[str]) -> re.Pattern[str] | None:
    # Longest first, and never followed by a digit, so EMAIL_1 leaves EMAIL_12 alone.
    names = sorted(placeholders, key=len, reverse=True)
    return re.compile("(?:" + "|".join(map(re.escape, names)) + r")(?![0-9])") if names else None


def _restore_with(pattern: re.Pattern[str] | None, mapping: Mapping[str, str], text: str) -> str:
    # One pass: an original that happens to contain "URL_2" is not itself rewritten.
    return pattern.sub(lambda m: mapping[m.group()], text) if pattern else text


def restore(text: str, mapping: Mapping[str, str]) -> str:
    """Put the originals back into an upstream answer.

    The text is treated as text: when it is JSON and an original holds a quote or a backslash, parse
    it first and use `Redactor.restore_value`, which restores inside the parsed strings."""
    return _restore_with(_placeholder_pattern(mapping), mapping, text)


class _Ledger:
    """Which placeholder stands for which value, shared by every text of one exchange."""

    def __init__(self) -> None:
        self.mapping: dict[str, str] = {}
        self._placeholder_of: dict[str, str] = {}
        self._last_number: Counter[str] = Counter()

    def redact(self, text: str, kinds: Iterable[str] | None, use_presidio: bool, avoid: str) -> str:
        pieces: list[str] = []
        cursor = 0
        for span in detect(text, kinds, use_presidio=use_presidio):
            pieces += [text[cursor : span.start], self._placeholder(span.kind, text[span.start : span.end], avoid)]
            cursor = span.end
        pieces.append(text[cursor:])
        return "".join(pieces)

    def _placeholder(self, kind: str, value: str, avoid: str) -> str:
        if value in self._placeholder_of:
            return self._placeholder_of[value]
        while True:
            self._last_number[kind] += 1
            placeholder = f"{kind}_{self._last_number[kind]}"
            # A text that already says "EMAIL_1" would get the email back there on restore.
            if not re.search(re.escape(placeholder) + r"(?![0-9])", avoid):
                break
        self._placeholder_of[value] = placeholder
        self.mapping[placeholder] = value
        return placeholder

    def counts(self) -> dict[str, int]:
        return dict(Counter(placeholder.rsplit("_", 1)[0] for placeholder in self.mapping))


def redact(text: str, *, kinds: Iterable[str] | None = None, use_presidio: bool = False) -> Redaction:
    """Replace each secret or personal value in `text` with ``KIND_n``.

    `kinds` limits the detectors (default: all of `detectors.KINDS`). `use_presidio` adds PERSON and
    LOCATION findings when `presidio_analyzer` is installed, and is ignored when it is not."""
    ledger = _Ledger()
    redacted = ledger.redact(text, kinds, use_presidio, avoid=text)
    return Redaction(redacted, dict(ledger.mapping), ledger.counts())


class Redactor:
    """The privacy guard in front of a hosted model, for one exchange.

    `allow` sends texts unchanged, `redact` sends them with placeholders, `local_only` refuses to
    send anything. Successive `prepare` calls share one mapping, so the answers of every turn can be
    restored with it."""

    def __init__(
        self,
        policy: PrivacyPolicy = "redact",
        *,
        kinds: Iterable[str] | None = None,
        use_presidio: bool = False,
        task: str | None = None,
    ) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown privacy policy {policy!r}; known: {', '.join(POLICIES)}")
        self.policy: PrivacyPolicy = policy
        self.kinds = None if kinds is None else tuple(kinds)
        self.use_presidio = use_presidio
        self.task = task  # named in the error of `local_only`
        self._ledger = _Ledger()

    @property
    def mapping(self) -> dict[str, str]:
        return dict(self._ledger.mapping)

    @property
    def counts(self) -> dict[str, int]:
        """Kind → how many distinct values were replaced so far."""
        return self._ledger.counts()

    def prepare(self, texts: list[str]) -> tuple[list[str], dict[str, str]]:
        """The texts as they may leave the machine, and the mapping (so far) to restore answers."""
        if self.policy == "local_only":
            task = f"task {self.task!r}" if self.task else "this task"
            raise PrivacyPolicyError(
                f"The privacy policy of {task} is local_only: it forbids sending data off the machine, "
                "so it cannot be sent to a hosted model.",
                hint="Run it on a local model, or set the task's `privacy` policy to `redact` (secrets and "
                "personal data replaced by placeholders) or `allow`.",
            )
        if self.policy == "allow":
            return list(texts), {}
        avoid = "\n".join(texts)
        redacted = [self._ledger.redact(text, self.kinds, self.use_presidio, avoid) for text in texts]
        return redacted, self.mapping

    def restore(self, text: str) -> str:
        return restore(text, self._ledger.mapping)

    def restore_value(self, value: Any) -> Any:
        """Restore placeholders in every string (keys included) of a JSON-like value."""
        mapping = self._ledger.mapping
        pattern = _placeholder_pattern(mapping)

        def walk(node: Any) -> Any:
            if isinstance(node, str):
                return _restore_with(pattern, mapping, node)
            if isinstance(node, dict):
                return {walk(key): walk(item) for key, item in node.items()}
            if isinstance(node, list):
                return [walk(item) for item in node]
            if isinstance(node, tuple):
                return tuple(walk(item) for item in node)
            return node

        return walk(value)
