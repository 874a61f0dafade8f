"""Grammar-constrained decoding: always-valid JSON (or a regex, a choice, a Lark grammar) out of
a small model.

Each constraint is a `TokenConstraint` (see `sampling.py`) backed by an llguidance matcher over
the model's vocabulary (`vocab_bridge.py` builds that once per model). Why llguidance:
`benchmarks/constrained_decoding.py` compares it with xgrammar and llama.cpp's GBNF sampler on
this project's models. llguidance and xgrammar both cover every JSON-Schema feature the tasks
need (llama.cpp's converter drops integer ranges and emits grammars it cannot parse). llguidance
compiles a schema in ~0.4 ms (xgrammar 20-35 ms) and computes a mask in ~60-110 µs on average on
151k-262k-token vocabularies (xgrammar ~12 µs, GBNF 20-40 ms): next to a 25-40 ms decode step both
are noise, while xgrammar's compile is not, and xgrammar imports torch and transformers.

    constraint = JsonSchemaConstraint(model, {"type": "object", ...})
    [result] = generate(engine, [GenerateRequest(prompt, SamplingParams(max_tokens=128), constraint=constraint)])
    json.loads(model.detokenize(result.tokens))   # valid and schema-conformant when finish_reason != "length"

A constraint is single-use: it follows one generation from its first token.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from workhorse.engine.model import LlamaModel
from workhorse.engine.vocab_bridge import llg_tokenizer
from workhorse.errors import EngineError

if TYPE_CHECKING:
    import llguidance

__all__ = [
    "ChoiceConstraint",
    "GrammarConstraint",
    "JsonSchemaConstraint",
    "LlguidanceConstraint",
    "RegexConstraint",
]


class LlguidanceConstraint:
    """A `TokenConstraint` for any llguidance grammar; the subclasses build the grammar."""

    def __init__(self, model: LlamaModel, grammar: str, *, what: str) -> None:
        import llguidance
        from llguidance.numpy import allocate_token_bitmask, fill_next_token_bitmask

        if model.ptr is None:
            raise EngineError(f"{model.name} is closed", "constrain generation on a loaded model")
        self.model = model
        self.what = what  # for messages: "JSON schema", "regex …"
        tokenizer = llg_tokenizer(model)
        self._matcher: llguidance.LLMatcher = llguidance.LLMatcher(tokenizer, grammar, log_level=0)
        if self._matcher.is_error():
            raise EngineError(
                f"cannot compile the {what}: {self._matcher.get_error()}",
                "simplify it to features llguidance supports (no look-around in patterns, no uniqueItems); "
                "see https://github.com/guidance-ai/llguidance/blob/main/docs/json_schema.md",
            )
        self._fill = fill_next_token_bitmask
        self._bitmask = allocate_token_bitmask(1, tokenizer.vocab_size)
        self._n_vocab = model.n_vocab
        self._mask: np.ndarray | None = None  # the mask of the current state, once computed
        self._n_tokens = 0

    # -- TokenConstraint ----------------------------------------------------------------------
    def allowed_tokens(self) -> np.ndarray:
        """A bool mask of length `model.n_vocab`; end-of-generation tokens are set once the
        grammar is complete."""
        if self._mask is None:
            self._fill(self._matcher, self._bitmask)
            self._raise_if_error()
            if not self._bitmask.any():
                raise EngineError(
                    f"the {self.what} allows no token after {self._n_tokens} tokens",
                    "the grammar can only be satisfied by text this vocabulary cannot spell; simplify it",
                )
            bits = np.unpackbits(self._bitmask.view(np.uint8), count=self._n_vocab, bitorder="little")
            self._mask = bits.view(np.bool_)
        return self._mask

    def advance(self, token: int) -> None:
        if not self._matcher.consume_token(token):
            self._raise_if_error()
            raise EngineError(  # consume_token always sets an error; this is belt and braces
                f"token {token} does not fit the {self.what}",
                "sample only tokens from allowed_tokens()",
            )
        self._mask = None
        self._n_tokens += 1

    def is_finished(self) -> bool:
        """True when nothing but an end-of-generation token may follow (a JSON value's closing
        brace, the end of a fixed choice). Output that is complete but could go on (a number,
        `[a-z]+`) stays unfinished; the model ends it by choosing EOS, which the mask allows."""
        return self._matcher.is_stopped()

    # -- extras -------------------------------------------------------------------------------
    def forced_tokens(self) -> list[int]:
        """Tokens the grammar forces next whatever the model says (e.g. `"name":"` after `{`):
        a caller may decode them without sampling, passing each to `advance()`. Empty when the
        next token is a real choice. The last forced bytes are withheld when they could merge
        into a longer token with what follows, so this never forces a non-canonical split."""
        tokens = self._matcher.compute_ff_tokens()
        self._raise_if_error()
        return tokens

    def is_accepting(self) -> bool:
        """True when the output so far is a complete match (it may still be extendable)."""
        return self._matcher.is_accepting()

    def _raise_if_error(self) -> None:
        if self._matcher.is_error():
            raise EngineError(
                f"constrained decoding failed after {self._n_tokens} tokens of the {self.what}: "
                f"{self._matcher.get_error()}",
                "this is a bug or a grammar limit (e.g. too complex); report it with the schema or grammar",
            )


class JsonSchemaConstraint(LlguidanceConstraint):
    """Only JSON that validates against `schema`.

    `separators` are the item and key separators, as in `json.dumps` (default compact: fewer
    tokens to decode). `flexible_whitespace` also lets the model put whitespace between tokens,
    which it wastes steps on, so it is off by default. Properties come in the schema's order.
    `lenient` ignores keywords llguidance does not implement instead of refusing the schema.
    A schema's own `x-guidance` options take precedence over these.
    """

    def __init__(
        self,
        model: LlamaModel,
        schema: dict[str, Any],
        *,
        separators: tuple[str, str] = (",", ":"),
        flexible_whitespace: bool = False,
        lenient: bool = False,
    ) -> None:
        import llguidance

        if not isinstance(schema, dict):
            raise EngineError(f"a JSON schema must be a JSON object, not {type(schema).__name__}",
                              'pass a dict such as {"type": "object", "properties": {...}}')
        options = {
            "item_separator": separators[0],
            "key_separator": separators[1],
            "whitespace_flexible": flexible_whitespace,
            "lenient": lenient,
        }
        try:
            grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=options)
        except (ValueError, TypeError) as exc:
            raise EngineError(f"invalid JSON schema: {exc}", "the schema must be JSON-serialisable") from None
        super().__init__(model, grammar, what="JSON schema")
        self.schema = schema


class RegexConstraint(LlguidanceConstraint):
    """Only text fully matching `pattern` (Rust regex syntax, anchored at both ends; no
    look-around or backreferences). For short normalised values: dates, codes, numbers."""

    def __init__(self, model: LlamaModel, pattern: str) -> None:
        import llguidance

        super().__init__(model, llguidance.LLMatcher.grammar_from_regex(pattern), what=f"regex {pattern!r}")
        self.pattern = pattern


class ChoiceConstraint(LlguidanceConstraint):
    """Exactly one of `options` (verbatim text)."""

    def __init__(self, model: LlamaModel, options: Sequence[str]) -> None:
        import llguidance

        options = list(options)
        if not options or not all(isinstance(o, str) and o for o in options):
            raise EngineError("a choice needs at least one option, each a non-empty string",
                              f"got {options!r}")
        # Lark string literals share JSON's escapes (this is how llguidance writes choices).
        lark = "start: " + " | ".join(json.dumps(o) for o in dict.fromkeys(options))
        super().__init__(model, llguidance.LLMatcher.grammar_from_lark(lark), what="choice")
        self.options = options


class GrammarConstraint(LlguidanceConstraint):
    """Only text in the language of a Lark grammar (llguidance's dialect: regex terminals,
    `%json {schema}` for embedded JSON; see llguidance's docs/syntax.md). Start symbol: `start`."""

    def __init__(self, model: LlamaModel, lark: str) -> None:
        import llguidance

        super().__init__(model, llguidance.LLMatcher.grammar_from_lark(lark), what="Lark grammar")
        self.lark = lark
