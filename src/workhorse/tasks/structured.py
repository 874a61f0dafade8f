"""The `extract` and `convert` kinds: constrained generation of short, always-valid outputs.

The prompt is the model's chat template (or a plain prompt for base models) with the
instructions, the schema and the examples before the item, so everything up to the item is a
cached prefix. The answer is generated under a grammar: a JSON Schema for extract and JSON
converts, a regex for single normalised values; the model writes values, never the input back.
Confidence is the geometric mean probability of the tokens the model chose where the grammar
left it a choice.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema

from workhorse.engine import Evaluator, GenerateRequest, GenerateResult, JsonSchemaConstraint, RegexConstraint, SamplingParams
from workhorse.errors import TaskSpecError
from workhorse.tasks.answer import LocalAnswer
from workhorse.tasks.features import MAX_ITEM_TOKENS
from workhorse.tasks.spec import TaskSpec

_ITEM = "\u0000ITEM\u0000"  # marks where the item goes when rendering the template


@dataclass
class StructuredAnswer:
    value: Any  # the parsed JSON (extract, JSON convert) or the string (value convert); None if invalid
    text: str
    valid: bool
    confidence: float
    finish_reason: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


class StructuredGenerator:
    def __init__(self, spec: TaskSpec, evaluator: Evaluator, *, max_tokens: int = 160) -> None:
        self.spec = spec
        self.evaluator = evaluator
        self.max_tokens = max_tokens
        model = evaluator.model
        self._schema = spec.schema_
        self._regex = _value_pattern(spec)
        if spec.kind == "convert" and self._regex is None and not self._schema and spec.target != "json":
            raise TaskSpecError(
                f"convert target {spec.target!r} has no grammar here",
                "give the task a `schema` (JSON) or a string `schema` with a `pattern` (target: value)",
            )
        self._validator = jsonschema.Draft202012Validator(self._schema) if self._schema and self._regex is None else None
        before, after = _render_prompt(spec, model)
        self._prefix = model.tokenize_rendered(before)
        self._tail = model.tokenize(after, add_special=False, parse_special=True)

    def _constraint(self):
        model = self.evaluator.model
        if self._regex is not None:
            return RegexConstraint(model, self._regex)
        return JsonSchemaConstraint(model, self._schema or {"type": "object"})

    def request(self, text: str, params: SamplingParams | None = None) -> GenerateRequest:
        """The constrained generation request for one item (the prompt up to the item is its prefix)."""
        item = self.evaluator.model.tokenize(text, add_special=False)[:MAX_ITEM_TOKENS]
        return GenerateRequest(
            self._prefix + item + self._tail,
            params or SamplingParams(max_tokens=self.max_tokens, confidence=True),
            prefix_len=len(self._prefix),
            constraint=self._constraint(),
        )

    def run(self, texts: Sequence[str]) -> list[StructuredAnswer]:
        model = self.evaluator.model
        results = self.evaluator.generate([self.request(text) for text in texts])
        return [self._answer(model.detokenize(r.tokens), r) for r in results]

    def _answer(self, text: str, result: GenerateResult) -> StructuredAnswer:
        confidence = result.confidence if result.confidence is not None else 0.0
        tokens = {"prompt_tokens": result.n_prompt, "completion_tokens": len(result.tokens)}
        if result.finish_reason == "length":
            return StructuredAnswer(None, text, False, confidence, result.finish_reason, **tokens)
        if self._regex is not None:
            return StructuredAnswer(text, text, True, confidence, result.finish_reason, **tokens)
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            return StructuredAnswer(None, text, False, confidence, result.finish_reason, **tokens)
        valid = self._validator is None or self._validator.is_valid(value)
        return StructuredAnswer(value if valid else None, text, valid, confidence, result.finish_reason, **tokens)


class StructuredTask:
    """Answers are the parsed output with its confidence; an output that failed validation is
    flagged `valid: false` with the model's raw text."""

    def __init__(self, spec: TaskSpec, directory: Path | None, evaluator: Evaluator) -> None:
        self.spec = spec
        self.generator = StructuredGenerator(spec, evaluator)

    def run(self, texts: Sequence[str]) -> list[LocalAnswer]:
        return [
            LocalAnswer(a.value, a.confidence, {"valid": a.valid} | ({} if a.valid else {"raw": a.text}),
                        prompt_tokens=a.prompt_tokens, completion_tokens=a.completion_tokens)
            for a in self.generator.run(texts)
        ]


def _value_pattern(spec: TaskSpec) -> str | None:
    """A convert task whose target is a single value with a string pattern is generated by regex."""
    schema = spec.schema_ or {}
    if spec.kind == "convert" and spec.target == "value" and schema.get("type") == "string" and "pattern" in schema:
        return schema["pattern"].removeprefix("^").removesuffix("$")
    return None


def _render_prompt(spec: TaskSpec, model) -> tuple[str, str]:
    """The prompt text before and after the item."""
    instructions = spec.instructions or ("Extract the fields." if spec.kind == "extract" else "Convert the input.")
    if spec.schema_:
        instructions += "\nAnswer with JSON matching this schema:\n" + _compact_json(spec.schema_)
    # Examples are written exactly as the constrained answer will be (compact JSON), so the
    # model is not steered towards spacing the grammar forbids.
    plain_value = _value_pattern(spec) is not None
    shots = [
        (ex.input, ex.output if plain_value and isinstance(ex.output, str) else _compact_json(ex.output))
        for ex in spec.examples
    ]
    if model.chat_template:
        messages = [{"role": "system", "content": instructions}]
        for question, answer in shots:
            messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        messages.append({"role": "user", "content": _ITEM})
        rendered = model.apply_chat_template(messages, add_generation_prompt=True)
    else:
        rendered = instructions + "\n\n" + "".join(f"Input: {q}\nOutput: {a}\n\n" for q, a in shots)
        rendered += f"Input: {_ITEM}\nOutput: "
    before, after = rendered.split(_ITEM)
    return before, after


def _compact_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))

