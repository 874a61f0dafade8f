"""Task specs: validation with line numbers, the store, the shipped examples, `workhorse tasks`."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from workhorse.cli import app
from workhorse.errors import TaskNotFoundError, TaskSpecError
from workhorse.tasks.spec import TaskSpec
from workhorse.tasks.store import EXAMPLES_DIR, load_task, next_version, parse_task, save_task, task_versions


def test_errors_point_at_line_and_field():
    text = "name: ok\nkind: classify\nlabels:\n  - name: a\n  - nam: b\nclassify:\n  threshold: 3\n"
    with pytest.raises(TaskSpecError) as caught:
        parse_task(text, "t.yaml")
    message = caught.value.message
    assert "t.yaml:5: labels.1.name: Field required" in message
    assert "t.yaml:7: classify.threshold" in message


def test_yaml_syntax_error_names_the_line():
    with pytest.raises(TaskSpecError, match=r"t.yaml:2: not valid YAML"):
        parse_task("name: x\n\tkind: classify\n", "t.yaml")


@pytest.mark.parametrize(
    "text, problem",
    [
        ("name: x\nkind: classify\nlabels: [{name: a}]\n", "at least two labels"),
        ("name: x\nkind: classify\nlabels: [{name: a}, {name: a}]\n", "unique"),
        ("name: x\nkind: extract\n", "needs a `schema`"),
        ("name: x\nkind: convert\n", "`target`"),
        ("name: x\nkind: classify\nlabels: [{name: a}, {name: b}]\nclassify: {feature_prompt: no slot}\n", "{text}"),
    ],
)
def test_kind_rules(text, problem):
    with pytest.raises(TaskSpecError, match=problem.replace("{", r"\{").replace("}", r"\}").replace("[", r"\[")):
        parse_task(text)


def test_every_shipped_example_is_valid():
    names = {load_task(path)[0].name for path in EXAMPLES_DIR.glob("*.yaml")}
    assert {"support-intents", "support-intents-zh", "log-fields", "date-normalize", "text-features"} <= names
    assert load_task("support-intents")[0].kind == "classify"  # found by name too


def test_store_versions_roundtrip():
    spec = TaskSpec(name="demo", kind="classify", labels=[{"name": "a"}, {"name": "b"}])
    save_task(spec)
    save_task(spec.model_copy(update={"version": 2, "description": "second"}))
    assert task_versions("demo") == [1, 2] and next_version("demo") == 3
    latest, _ = load_task("demo")
    assert latest.version == 2 and latest.description == "second"
    assert load_task("demo", version=1)[0].description == ""
    with pytest.raises(TaskNotFoundError, match="known tasks: .*demo"):
        load_task("nope")


def test_cli_new_validate_list(tmp_path: Path):
    runner = CliRunner()
    out = tmp_path / "mine.yaml"
    for kind in ("classify", "extract", "convert", "embed"):
        result = runner.invoke(app, ["tasks", "new", "mine", "--kind", kind, "--out", str(out), "--force"])
        assert result.exit_code == 0, result.output
        result = runner.invoke(app, ["tasks", "validate", str(out)])
        assert result.exit_code == 0 and "ok" in result.output
    result = runner.invoke(app, ["tasks", "list", "--json"])
    assert result.exit_code == 0 and "support-intents" in result.output
