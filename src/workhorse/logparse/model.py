"""Asking the small model for the template of a line it has not seen.

The prompt is an instruction and the shipped demonstrations (a cached prefix), then the cached
templates most like the line (so a new template follows the ones already learnt), then the line.
The answer is constrained to the line itself with each chunk either kept or replaced by `<*>`
(`template.choice_pattern`): the model only decides where the variables are, it cannot rewrite
the line, and the words it keeps are fast-forwarded rather than sampled.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources

import yaml

from workhorse.engine import Evaluator, GenerateRequest, RegexConstraint, SamplingParams
from workhorse.logparse.template import Chunk, Template, choice_pattern, chunk, render

INSTRUCTION = (
    "Turn each log message into its template. Keep the words and punctuation that every message of "
    "the same kind shares; replace each value that changes from message to message (numbers, ids, "
    "addresses with their ports, paths, hosts, user and object names, times and sizes) with <*>.\n\n"
)
RETRIEVED = 3  # cached templates shown with each new line
# Other lines of the line's group shown before it (`grouping`): the model sees what varies.
SHOWN_LINES = 2
# KV cells the model's engine needs: the demonstrations, three retrieved templates with their
# example lines, a line of up to `parser.MAX_MODEL_CHARS` characters and its answer.
CONTEXT_TOKENS = 8192
# Logit added to tokens that begin a wildcard: a chunk becomes a variable only when the model
# prefers that clearly. A 0.5B model left to itself wildcards words once it has started.
WILDCARD_BIAS = float(os.environ.get("WORKHORSE_LOGS_WILDCARD_BIAS", "-2.0"))
_WORD = re.compile(r"[A-Za-z]{2,}")


@dataclass(frozen=True)
class Demo:
    log: str
    template: str


def shipped_demos() -> list[Demo]:
    text = resources.files("workhorse.logparse").joinpath("demos.yaml").read_text(encoding="utf-8")
    return [Demo(row["log"], row["template"]) for row in yaml.safe_load(text)]


def _block(log: str, template: str | None = None) -> str:
    return f"Log: {log}\nTemplate: " + ("" if template is None else f"{template}\n\n")


def _words(text: str) -> frozenset[str]:
    return frozenset(w.lower() for w in _WORD.findall(text))


def similar(content: str, templates: Iterable[Template], k: int = RETRIEVED) -> list[Template]:
    """The k cached templates whose example lines share the most words with `content` (Jaccard)."""
    words = _words(content)
    scored = []
    for template in templates:
        other = _words(template.example)
        union = len(words | other)
        if union:
            scored.append((len(words & other) / union, template.id, template))
    scored.sort(key=lambda row: (-row[0], row[1]))
    return [template for score, _, template in scored[:k] if score > 0]


class TemplateModel:
    """Templates for unseen lines from a small model (`evaluator`: an Engine or EngineWorker)."""

    def __init__(self, evaluator: Evaluator, demos: Sequence[Demo] | None = None) -> None:
        self.evaluator = evaluator
        self.model = evaluator.model
        demos = shipped_demos() if demos is None else demos
        self._prefix = self.model.tokenize(INSTRUCTION + "".join(_block(d.log, d.template) for d in demos))
        self.calls = 0
        self.prompt_tokens = 0  # past the shared prefix: what each call costs the engine before its answer
        self._bias = {token: WILDCARD_BIAS for token in _wildcard_tokens(self.model)} if WILDCARD_BIAS else {}

    def templates(
        self, contents: Sequence[str], known: Sequence[Template] = (), *,
        chunks: Sequence[Sequence[Chunk]] | None = None, others: Sequence[Sequence[str]] | None = None,
    ) -> list[str]:
        """One template per (normalized) content, generated together in one batch. `chunks`: each
        content's chunks when some are already known to be variables (a group's values, marked
        `variable`); `others`: lines of each content's group, shown before it."""
        requests = [
            self._request(content, list(chunks[i]) if chunks is not None else chunk(content), known,
                          others[i] if others is not None else ())
            for i, content in enumerate(contents)
        ]
        results = self.evaluator.generate(requests)
        self.calls += len(contents)
        self.prompt_tokens += sum(len(r.tokens) - r.prefix_len for r in requests)
        return [render([self.model.detokenize(result.tokens)]) for result in results]

    def _request(self, content: str, chunks: list[Chunk], known: Sequence[Template], others: Sequence[str]) -> GenerateRequest:
        shown = "".join(_block(t.example, t.text) for t in reversed(similar(content, known)))
        group = "".join(f"Log: {other}\n" for other in others[:SHOWN_LINES])
        tail = self.model.tokenize(shown + group + _block(content), add_special=False)
        # Each wildcard may take more tokens than the chunk it replaces.
        n_out = len(self.model.tokenize(content, add_special=False)) + 2 * len(chunks) + 8
        return GenerateRequest(
            self._prefix + tail,
            SamplingParams(max_tokens=n_out, logit_bias=self._bias),
            prefix_len=len(self._prefix),
            constraint=RegexConstraint(self.model, choice_pattern(chunks)),
        )


def _wildcard_tokens(model) -> list[int]:
    """Tokens whose text (after a leading space) starts a wildcard: `<`, `<*`, `<*>`, `<*>…`."""
    found = []
    for token in range(model.n_vocab):
        text = model.token_bytes(token).decode("utf-8", errors="replace").lstrip()
        if text in ("<", "<*") or text.startswith("<*>"):
            found.append(token)
    return found
