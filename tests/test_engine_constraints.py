"""Constrained decoding: whatever the model says, the output parses and validates.

The tiny model has random weights, so its output is gibberish and the constraint does all the
work; sampling at temperature 1.0 over many seeds walks many paths through each grammar.
"""

from __future__ import annotations

import json
import re

import jsonschema
import numpy as np
import pytest

from workhorse.engine import Engine, EngineConfig, GenerateRequest, LlamaModel, SamplingParams, generate
from workhorse.engine.constraints import (
    ChoiceConstraint,
    GrammarConstraint,
    JsonSchemaConstraint,
    RegexConstraint,
)
from workhorse.engine.generation import GenerationBatch
from workhorse.engine.vocab_bridge import SPECIAL_PREFIX, end_tokens, llg_tokenizer, token_table
from workhorse.errors import EngineError

SCHEMAS = {
    "object": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 12},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "email": {"type": "string", "pattern": "^[a-z]{1,8}@[a-z]{1,8}\\.(com|org)$"},
        },
        "required": ["name", "age"],
        "additionalProperties": False,
    },
    "nested + array + anyOf": {
        "type": "object",
        "properties": {
            "ticket": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"},
            "customer": {
                "type": "object",
                "properties": {"id": {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 9999},
                                                {"type": "null"}]},
                               "vip": {"type": "boolean"}},
                "required": ["id", "vip"],
                "additionalProperties": False,
            },
            "tags": {"type": "array", "items": {"enum": ["refund", "card", "login"]}, "minItems": 1, "maxItems": 3},
            "priority": {"type": "integer", "minimum": 1, "maximum": 5},
        },
        "required": ["ticket", "customer", "tags"],
        "additionalProperties": False,
    },
    "array of short strings": {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 6}, "minItems": 1,
                               "maxItems": 4},
}
SEEDS = range(20)


@pytest.fixture(scope="module")
def engine(tiny_model):
    # One thread: on a shared 2-core machine llama.cpp's two threads spin against each other.
    engine = Engine(tiny_model, EngineConfig(n_ctx=4096, n_batch=256, n_slots=16, prefix_slots=0,
                                             kv_type="f32", n_threads=1))
    yield engine
    engine.close()


def _generate(engine: Engine, constraint_for, seeds, max_tokens: int = 96):
    prompt = engine.model.tokenize("the refund for my card")
    requests = [GenerateRequest(prompt, SamplingParams(temperature=1.0, seed=s, max_tokens=max_tokens),
                                constraint=constraint_for()) for s in seeds]
    return generate(engine, requests)


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_every_sampled_output_is_valid_json_for_the_schema(engine, tiny_model, name):
    schema = SCHEMAS[name]
    results = _generate(engine, lambda: JsonSchemaConstraint(tiny_model, schema), SEEDS)
    texts = set()
    for result in results:
        assert result.finish_reason in ("constraint", "stop"), result
        text = tiny_model.detokenize(result.tokens)
        jsonschema.validate(json.loads(text), schema)
        texts.add(text)
    assert len(texts) > 1  # the seeds really took different paths


def test_a_closed_object_finishes_by_constraint_without_an_eos_step(engine, tiny_model):
    [result] = generate(engine, [GenerateRequest(tiny_model.tokenize("hello"), SamplingParams(max_tokens=96),
                                                 constraint=JsonSchemaConstraint(tiny_model, SCHEMAS["object"]))])
    assert result.finish_reason == "constraint"
    assert tiny_model.detokenize(result.tokens).endswith("}")


def test_enum_only_schema_yields_one_of_its_values(engine, tiny_model):
    values = ["refund", "card lost", 42, None]
    results = _generate(engine, lambda: JsonSchemaConstraint(tiny_model, {"enum": values}), SEEDS, max_tokens=16)
    seen = set()
    for result in results:
        assert result.finish_reason in ("constraint", "stop")
        value = json.loads(tiny_model.detokenize(result.tokens))
        assert value in values
        seen.add(json.dumps(value))
    assert len(seen) > 1


def test_choice_and_regex_constraints(engine, tiny_model):
    options = ["refund", "card lost", "other"]
    for result in _generate(engine, lambda: ChoiceConstraint(tiny_model, options), range(8), max_tokens=16):
        assert tiny_model.detokenize(result.tokens) in options
    pattern = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
    for result in _generate(engine, lambda: RegexConstraint(tiny_model, pattern), range(8), max_tokens=16):
        assert re.fullmatch(pattern, tiny_model.detokenize(result.tokens))
        assert result.finish_reason == "constraint"
    lark = 'start: "level=" LEVEL\nLEVEL: "info" | "warn" | "error"'
    for result in _generate(engine, lambda: GrammarConstraint(tiny_model, lark), range(4), max_tokens=16):
        assert tiny_model.detokenize(result.tokens) in ("level=info", "level=warn", "level=error")


def test_an_open_ended_match_ends_when_the_model_picks_eos(tiny_model):
    constraint = RegexConstraint(tiny_model, "[0-9]+")
    constraint.advance(tiny_model.tokenize("7", add_special=False)[-1])
    mask = constraint.allowed_tokens()
    assert constraint.is_accepting() and not constraint.is_finished()
    assert mask[tiny_model.eos]  # complete: EOS allowed …
    assert mask[tiny_model.tokenize("7", add_special=False)[-1]]  # … and so is another digit


def test_mask_is_a_bool_vector_over_the_vocabulary(tiny_model):
    constraint = JsonSchemaConstraint(tiny_model, SCHEMAS["object"])
    mask = constraint.allowed_tokens()
    assert mask.dtype == np.bool_ and mask.shape == (tiny_model.n_vocab,)
    assert [tiny_model.token_bytes(t) for t in np.flatnonzero(mask)] == [b"{"]
    assert not mask[tiny_model.eos]
    assert constraint.allowed_tokens() is mask  # computed once per state


def test_forced_tokens_spell_the_fixed_key(tiny_model):
    constraint = JsonSchemaConstraint(tiny_model, SCHEMAS["object"])
    forced = constraint.forced_tokens()
    assert b"".join(tiny_model.token_bytes(t) for t in forced) == b'{"name":"'
    for token in forced:
        assert constraint.allowed_tokens()[token]
        constraint.advance(token)
    assert constraint.forced_tokens() == []  # inside the string the model chooses


def test_a_token_outside_the_mask_raises_an_engine_error(tiny_model):
    constraint = JsonSchemaConstraint(tiny_model, SCHEMAS["object"])
    bad = tiny_model.tokenize("x", add_special=False)[-1]
    assert not constraint.allowed_tokens()[bad]
    with pytest.raises(EngineError, match="constrained decoding failed after 0 tokens"):
        constraint.advance(bad)


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"type": "array", "uniqueItems": True}, "uniqueItems"),
        ({"$ref": "#/definitions/missing"}, "missing"),
        ({"type": "string", "pattern": "(?<=a)b"}, "look-around"),
        (["not", "an", "object"], "must be a JSON object"),
    ],
)
def test_unsupported_or_broken_schemas_are_refused_clearly(tiny_model, schema, message):
    with pytest.raises(EngineError, match=message) as info:
        JsonSchemaConstraint(tiny_model, schema)
    assert info.value.hint


def test_lenient_ignores_unimplemented_keywords(tiny_model):
    JsonSchemaConstraint(tiny_model, {"type": "array", "uniqueItems": True}, lenient=True)


def test_empty_choice_is_refused(tiny_model):
    with pytest.raises(EngineError, match="at least one option"):
        ChoiceConstraint(tiny_model, [])


def test_the_vocabulary_bridge_is_built_once_per_model(tiny_model):
    assert llg_tokenizer(tiny_model) is llg_tokenizer(tiny_model)
    table = token_table(tiny_model)
    assert len(table) == tiny_model.n_vocab
    assert table[tiny_model.eos].startswith(SPECIAL_PREFIX)  # </s> is never text
    assert table[tiny_model.tokenize("the", add_special=False)[-1]] == b"e"
    assert end_tokens(tiny_model)[0] == tiny_model.eos


def test_special_tokens_never_appear_inside_strings(tiny_model):
    constraint = JsonSchemaConstraint(tiny_model, {"type": "string"})
    constraint.advance(tiny_model.tokenize('"', add_special=False)[-1])
    mask = constraint.allowed_tokens()
    specials = [t for t, piece in enumerate(token_table(tiny_model)) if piece.startswith(SPECIAL_PREFIX)]
    assert specials and not mask[specials].any()


# -- a real model -----------------------------------------------------------------------------
LOG_LINES = [
    "Mar 12 10:01:44 web1 sshd[2212]: Failed password for root from 203.0.113.9 port 52114 ssh2",
    "Mar 12 10:02:10 web1 sshd[2240]: Accepted publickey for deploy from 10.0.4.17 port 40022 ssh2",
    "Mar 12 10:03:51 db2 sshd[981]: Invalid user oracle from 198.51.100.23 port 61001",
]
LOG_SCHEMA = {
    "type": "object",
    "properties": {
        "host": {"type": "string", "maxLength": 32},
        "user": {"type": "string", "maxLength": 32},
        "ip": {"type": "string", "pattern": "^[0-9]{1,3}(\\.[0-9]{1,3}){3}$"},
        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
        "outcome": {"enum": ["failed", "accepted", "invalid_user"]},
    },
    "required": ["host", "user", "ip", "port", "outcome"],
    "additionalProperties": False,
}


@pytest.mark.real_model
def test_qwen_extracts_valid_fields_from_log_lines(real_model_path):
    model = LlamaModel(real_model_path("qwen2.5-coder-0.5b"), name="qwen2.5-coder-0.5b")
    # One thread, as above: under load it is 2× faster here than two spinning threads.
    engine = Engine(model, EngineConfig(n_ctx=2048, n_batch=512, n_slots=4, prefix_slots=0, n_threads=1))
    try:
        requests = []
        for line in LOG_LINES:
            prompt = model.apply_chat_template([
                {"role": "system", "content": "Extract the fields of the SSH log line as JSON: host, user, ip, "
                                              "port, outcome (failed, accepted or invalid_user)."},
                {"role": "user", "content": line},
            ])
            requests.append(GenerateRequest(model.tokenize(prompt, parse_special=True), SamplingParams(max_tokens=80),
                                            constraint=JsonSchemaConstraint(model, LOG_SCHEMA)))
        results = generate(engine, requests)
    finally:
        engine.close()
    for line, result in zip(LOG_LINES, results):
        assert result.finish_reason == "constraint"
        value = json.loads(model.detokenize(result.tokens))
        jsonschema.validate(value, LOG_SCHEMA)
        for key in ("host", "user", "ip", "port"):
            assert str(value[key]) in line, (key, value, line)


class _HidesForcedTokens:
    """The same constraint without `forced_tokens()`: generation must then sample every token."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def allowed_tokens(self):
        return self.inner.allowed_tokens()

    def advance(self, token: int) -> None:
        self.inner.advance(token)

    def is_finished(self) -> bool:
        return self.inner.is_finished()


def _steps_and_text(engine, constraint) -> tuple[int, str]:
    batch = GenerationBatch(engine)
    batch.add(GenerateRequest(engine.model.tokenize("the refund for my card"), SamplingParams(max_tokens=96),
                              constraint=constraint))
    steps, done = 0, {}
    while not done:
        done, steps = batch.step(), steps + 1
    [result] = done.values()
    return steps, engine.model.detokenize(result.tokens)


def test_forced_tokens_are_decoded_without_steps_of_their_own(engine, tiny_model):
    schema = SCHEMAS["nested + array + anyOf"]
    slow_steps, slow_text = _steps_and_text(engine, _HidesForcedTokens(JsonSchemaConstraint(tiny_model, schema)))
    fast_steps, fast_text = _steps_and_text(engine, JsonSchemaConstraint(tiny_model, schema))
    jsonschema.validate(json.loads(fast_text), schema)
    assert fast_text == slow_text  # greedy: the forced tokens are the ones the sampler had to pick
    assert fast_steps < slow_steps - 5  # keys such as `{"ticket":"` and `"customer":{"id":` cost no steps
