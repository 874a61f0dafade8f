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
from functools import cached_property
from pathlib import Path
from typing import Any

import jinja2
import jsonschema

from workhorse.engine import (
    Evaluator,
    GenerateRequest,
    GenerateResult,
    JsonSchemaConstraint,
    LlamaModel,
    RegexConstraint,
    SamplingParams,
)
from workhorse.engine.vocab_bridge import output_tokens
from workhorse.errors import EngineError, TaskSpecError
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


class StructuredPrompt:
    """The tokens of one item inside an extract or convert task's prompt, and of an answer as the
    grammar writes it: the one home of these tokens, so that training (which runs the model
    elsewhere) sees and says what the engine does.

    A prompt is the template's fixed head (a cacheable prefix), the item's own tokens (at most
    MAX_ITEM_TOKENS) and the template's tail, which opens the model's turn.
    """

    def __init__(self, spec: TaskSpec, model: LlamaModel) -> None:
        self.spec = spec
        self.model = model
        self.pattern = _value_pattern(spec)
        if spec.kind == "convert" and self.pattern is None and not spec.schema_ and spec.target != "json":
            raise TaskSpecError(
                f"convert target {spec.target!r} has no grammar here",
                "give the task a `schema` (JSON) or a string `schema` with a `pattern` (target: value)",
            )
        before, after = _render_prompt(spec, model)
        self.prefix = model.tokenize_rendered(before)
        self.tail = model.tokenize(after, add_special=False, parse_special=True)

    def tokens(self, text: str) -> list[int]:
        item = self.model.tokenize(text, add_special=False)[:MAX_ITEM_TOKENS]
        return self.prefix + item + self.tail

    def constraint(self) -> JsonSchemaConstraint | RegexConstraint:
        """A fresh grammar for one answer: the value pattern, else the schema (any object without one)."""
        if self.pattern is not None:
            return RegexConstraint(self.model, self.pattern)
        return JsonSchemaConstraint(self.model, self.spec.schema_ or {"type": "object"})

    def answer_tokens(self, answer: Any) -> list[int] | None:
        """`answer`'s tokens as the grammar writes them, then the token that ends the model's turn;
        None when the grammar could not write it (not valid against the schema, not matching the pattern)."""
        tokens = output_tokens(self.model, answer_text(self.spec, answer))
        constraint = self.constraint()
        try:
            for token in tokens:
                constraint.advance(token)
        except EngineError:
            return None
        if not constraint.is_accepting():
            return None
        return tokens + [self.end_of_turn]

    @cached_property
    def end_of_turn(self) -> int:
        """The token that ends the model's answer: the end-of-generation token the chat template
        puts after an assistant's message (`<|im_end|>`, `<end_of_turn>`), else EOS. The engine
        stops on either; this is the one the model learnt to end a turn with."""
        model = self.model
        if model.chat_template:
            try:
                rendered = model.apply_chat_template([{"role": "user", "content": "?"}, {"role": "assistant", "content": _ITEM}],
                                                     add_generation_prompt=False)
            except jinja2.TemplateError:  # a template that refuses this conversation: EOS ends generation too
                rendered = ""
            if _ITEM in rendered:
                after = model.tokenize(rendered.split(_ITEM, 1)[1], add_special=False, parse_special=True)
                ends = [token for token in after if model.is_eog(token)]
                if ends:
                    return ends[0]
        return model.eos


class StructuredGenerator:
    def __init__(self, spec: TaskSpec, evaluator: Evaluator, *, max_tokens: int = 160) -> None:
        self.spec = spec
        self.evaluator = evaluator
        self.max_tokens = max_tokens
        self.prompt = StructuredPrompt(spec, evaluator.model)
        schema = spec.schema_
        self._validator = jsonschema.Draft202012Validator(schema) if schema and self.prompt.pattern is None else None

    def request(self, text: str, params: SamplingParams | None = None) -> GenerateRequest:
        """The constrained generation request for one item (the prompt up to the item is its prefix)."""
        return GenerateRequest(
            self.prompt.tokens(text),
            params or SamplingParams(max_tokens=self.max_tokens, confidence=True),
            prefix_len=len(self.prompt.prefix),
            constraint=self.prompt.constraint(),
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
        if self.prompt.pattern is not None:
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
    # Examples are written exactly as the constrained answer will be (compact JSON, properties in
    # the schema's order), so the model is not steered towards text the grammar forbids.
    shots = [(ex.input, answer_text(spec, ex.output)) for ex in spec.examples]
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


def answer_text(spec: TaskSpec, answer: Any) -> str:
    """An answer as the task's grammar writes it: a value convert's string as it is, anything else
    compact JSON with each object's properties in its schema's order (the order the grammar keeps)."""
    if _value_pattern(spec) is not None and isinstance(answer, str):
        return answer
    return _compact_json(_in_schema_order(answer, spec.schema_ or {}))


def _in_schema_order(value: Any, schema: dict[str, Any]) -> Any:
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        ordered = [key for key in properties if key in value] + [key for key in value if key not in properties]
        return {key: _in_schema_order(value[key], properties.get(key) or {}) for key in ordered}
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_in_schema_order(item, schema["items"]) for item in value]
    return value


def _compact_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))

