"""extract / convert tasks: always-valid output under the grammar, on the tiny model."""

from __future__ import annotations

import jsonschema
import pytest

from workhorse.engine import Engine, EngineConfig
from workhorse.tasks.runner import TaskRunner
from workhorse.tasks.store import load_task, parse_task

SCHEMA_TASK = """
name: toy-extract
kind: extract
instructions: Extract the fields.
schema:
  type: object
  properties:
    action: {type: string, enum: [refund, login, card]}
    amount: {type: [integer, "null"], minimum: 0, maximum: 1000}
  required: [action, amount]
  additionalProperties: false
examples:
  - input: refund 20 please
    output: {action: refund, amount: 20}
"""


@pytest.fixture(scope="module")
def engine(tiny_model):
    engine = Engine(tiny_model, EngineConfig(n_ctx=2048, n_batch=256, n_slots=8, prefix_slots=2, n_threads=1))
    yield engine
    engine.close()


def test_extract_answers_are_schema_valid_with_a_confidence(engine):
    spec = parse_task(SCHEMA_TASK)
    runner = TaskRunner(spec, None, engine)  # type: ignore[arg-type]
    answers = runner.run(["refund my 30 dollars", "cannot login", "my card", "hello"])
    for answer in answers:
        assert answer.details["valid"] is True
        jsonschema.validate(answer.answer, spec.schema_)
        assert 0 < answer.confidence <= 1
    # The prompt up to the item is a cached prefix.
    assert engine.prefix_stats().hits >= 3


def test_value_convert_matches_its_pattern(engine):
    spec, directory = load_task("date-normalize")
    runner = TaskRunner(spec, directory, engine)
    for answer in runner.run(["March 3rd, 2024", "yesterday"]):
        assert answer.details["valid"]
        assert len(answer.answer) == 10 and answer.answer[4] == "-" and answer.answer[7] == "-"
