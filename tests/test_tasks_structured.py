"""extract / convert tasks: always-valid output under the grammar, on the tiny model."""

from __future__ import annotations

import jsonschema
import pytest

from workhorse.engine import Engine, EngineConfig
from workhorse.tasks.kinds import open_local_task
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
    runner = open_local_task(spec, None, engine)
    answers = runner.run(["refund my 30 dollars", "cannot login", "my card", "hello"])
    for answer in answers:
        assert answer.details["valid"] is True
        jsonschema.validate(answer.answer, spec.schema_)
        assert 0 < answer.confidence <= 1
    # The prompt up to the item is a cached prefix.
    assert engine.prefix_stats().hits >= 3


def test_value_convert_matches_its_pattern(engine):
    spec, directory = load_task("date-normalize")
    runner = open_local_task(spec, directory, engine)
    for answer in runner.run(["March 3rd, 2024", "yesterday"]):
        assert answer.details["valid"]
        assert len(answer.answer) == 10 and answer.answer[4] == "-" and answer.answer[7] == "-"


def test_cli_eval_reports_extraction_metrics(tiny_gguf, tmp_path):
    import json

    from typer.testing import CliRunner

    from workhorse.cli import app

    task = tmp_path / "toy.yaml"
    task.write_text(SCHEMA_TASK.replace("name: toy-extract", f"name: toy-extract\nmodel: {tiny_gguf}"))
    data = tmp_path / "gold.jsonl"
    data.write_text("".join(json.dumps({"text": t, "fields": {"action": a}}) + "\n" for t, a in [("refund 5", "refund"), ("login", "login")]))
    result = CliRunner().invoke(app, ["eval", str(task), str(data), "--json", "--latency-sample", "1", "--threads", "1"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["json_valid_rate"] == 1.0 and report["n"] == 2
    assert 0 <= report["field_exact_match"] <= 1 and report["items_per_s"] > 0


# Bounded strings: the tiny model's random output would otherwise run to max_tokens.
ENTITY_TASK = """
name: toy-entities
kind: extract
instructions: List the entities.
schema:
  type: object
  properties:
    name: {type: array, items: {type: string, minLength: 1, maxLength: 8}, maxItems: 2}
    city: {type: array, items: {type: string, minLength: 1, maxLength: 8}, maxItems: 2}
  required: [name, city]
  additionalProperties: false
"""


def test_cli_eval_reports_entity_f1_when_gold_fields_are_entity_lists(tiny_gguf, tmp_path):
    import json

    from typer.testing import CliRunner

    from workhorse.cli import app

    task = tmp_path / "ner.yaml"
    task.write_text(ENTITY_TASK.replace("name: toy-entities", f"name: toy-entities\nmodel: {tiny_gguf}"))
    data = tmp_path / "gold.jsonl"
    rows = [("Ann flew to Oslo", {"name": ["Ann"], "city": ["Oslo"]}), ("Bo", {"name": ["Bo"]})]
    data.write_text("".join(json.dumps({"text": t, "fields": f}) + "\n" for t, f in rows))
    result = CliRunner().invoke(app, ["eval", str(task), str(data), "--json", "--latency-sample", "1", "--threads", "1"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["json_valid_rate"] == 1.0
    scores = report["entity_f1"]
    assert scores["gold_entities"] == 3 and 0 <= scores["f1"] <= 1
    assert set(scores["per_type"]) <= {"name", "city"}
