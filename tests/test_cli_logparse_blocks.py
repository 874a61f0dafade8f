"""`workhorse logs parse` in blocks: a followed file's bursts are blocks, and a file's unseen lines
are grouped (one template per event, not per package)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from workhorse.cli import app
from workhorse.cli.logparse import _blocks, _head, _lines
from workhorse.evals.dpkg_log import generate


def test_a_followed_file_yields_its_lines_then_a_pause_then_the_lines_appended(tmp_path):
    path = tmp_path / "app.log"
    path.write_text("a\nb\nc\n")
    with open(path, encoding="utf-8") as stream:
        lines = _lines(stream, follow=True)
        assert [next(lines) for _ in range(4)] == ["a\n", "b\n", "c\n", None]
        with open(path, "a", encoding="utf-8") as out:
            out.write("d\ne")  # `e` is still being written
        assert next(lines) == "d\n"
        assert next(lines) is None
        with open(path, "a", encoding="utf-8") as out:
            out.write("\n")
        assert next(lines) == "e\n"


def test_blocks_end_at_a_pause_or_at_their_size_and_the_head_does_not_wait():
    items = ["a", "b", None, "c", None, None, "d", "e", "f", "g"]
    assert list(_blocks(items, 3)) == [["a", "b"], ["c"], ["d", "e", "f"], ["g"]]
    stream = iter(["a", "b", None, "c"])
    assert _head(stream, 200) == ["a", "b"] and list(stream) == ["c"]
    assert _head(iter([None, "a", "b", "c"]), 2) == ["a", "b"]


def test_a_dpkg_log_parses_to_few_templates_without_the_model(tmp_path):
    lines, truth = generate(2000, seed=5)
    log = tmp_path / "dpkg.log"
    log.write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(app, ["logs", "parse", str(log), "--no-model", "-o", str(tmp_path / "out.jsonl")])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(records) == 2000 and records[0]["header"].keys() == {"Date", "Time"}
    templates = {r["template"] for r in records}
    assert len(templates) <= len(set(truth)) + 2, templates
    again = CliRunner().invoke(app, ["logs", "parse", str(log), "--no-model", "--block", "1"])  # the task's cache is kept
    assert again.exit_code == 0 and all(json.loads(line)["source"] == "cache" for line in again.stdout.splitlines() if line.startswith("{"))


def test_a_served_requests_lines_are_grouped_together(tmp_path, tiny_model):
    """`LogsTask.run` (the task route) parses a request's lines as one block: one model call per
    group, and the tiny model's template for a group covers each of its lines."""
    from workhorse.engine import Engine, EngineConfig
    from workhorse.tasks.logs import LogsTask
    from workhorse.tasks.store import load_task

    spec, directory = load_task("log-templates")
    spec = spec.model_copy(update={"log_ask_model": True})
    engine = Engine(tiny_model, EngineConfig(n_ctx=4096, n_slots=4, prefix_slots=2))
    try:
        task = LogsTask(spec, directory, engine)
        task.log_task.cache_file = tmp_path / "templates.json"
        lines = [f"2024-05-02 10:11:{i:02d} status installed pkg{i}-tools:amd64 1.{i}-1" for i in range(20)]
        task.log_task.detect(lines)
        answers = task.run(lines)
        assert task.log_task.model_calls == 0  # twenty lines of one group: decided by their evidence (MODEL_BELOW)
        assert len({a.answer["template_id"] for a in answers}) == 1
        alone = task.run(["2024-05-02 10:12:00 purge blender-data:all 2.83"])  # like no other line: the model is asked
        assert task.log_task.model_calls == 1 and alone[0].answer["source"] == "learnt"
    finally:
        engine.close()


@pytest.mark.parametrize("asked", [False, True])
def test_the_model_is_asked_only_when_the_task_says_so(tmp_path, tiny_model, asked):
    from workhorse.engine import Engine, EngineConfig
    from workhorse.tasks.logs import LogsTask
    from workhorse.tasks.store import load_task

    spec, directory = load_task("log-templates")
    assert spec.log_ask_model is False  # the shipped task: the rules and the evidence alone
    spec = spec.model_copy(update={"log_ask_model": asked})
    engine = Engine(tiny_model, EngineConfig(n_ctx=4096, n_slots=4, prefix_slots=2))
    try:
        task = LogsTask(spec, directory, engine)
        task.log_task.cache_file = tmp_path / "templates.json"
        lines = ["job 17 finished in 3 s", "disk sda is 91% full", "user alice logged in from 10.0.0.7"]
        answers = task.run(lines)
        assert task.log_task.model_calls == (len(lines) if asked else 0)
        assert [a.answer["content"] for a in answers] == lines and all("<*>" in a.answer["template"] for a in answers)
    finally:
        engine.close()
