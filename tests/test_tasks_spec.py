"""Task specs: validation with line numbers, the store (and its durable writes), the shipped examples, `workhorse tasks`."""

from __future__ import annotations

import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from typer.testing import CliRunner

from workhorse.cli import app
from workhorse.errors import TaskNotFoundError, TaskSpecError
from workhorse.tasks.spec import TaskSpec
from workhorse.tasks.store import (
    EXAMPLES_DIR,
    load_task,
    next_version,
    parse_task,
    save_revision,
    save_task,
    task_versions,
    version_dir,
)


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


def test_concurrent_saves_of_one_version_each_use_their_own_temp_file():
    """Writers of one task file each write a temp file of their own: with one fixed temp name a
    writer renamed another's half-written file, or found its own gone."""
    specs = [TaskSpec(name="raced", kind="classify", labels=[{"name": "a"}, {"name": "b"}], description=f"writer {i}")
             for i in range(4)]
    start = threading.Barrier(len(specs))

    def save_many(spec: TaskSpec) -> None:
        start.wait(30)
        for _ in range(150):
            save_task(spec)

    with ThreadPoolExecutor(len(specs)) as pool:
        list(pool.map(save_many, specs))  # re-raises any writer's error
    spec, directory = load_task("raced")
    assert spec.description in {s.description for s in specs}
    assert sorted(p.name for p in directory.iterdir()) == ["task.yaml"]


def test_a_failed_save_leaves_no_temp_file_behind():
    spec = TaskSpec(name="blocked", kind="classify", labels=[{"name": "a"}, {"name": "b"}])
    directory = version_dir(spec)
    (directory / "task.yaml").mkdir()  # the rename onto it fails
    with pytest.raises(OSError):
        save_task(spec)
    assert sorted(p.name for p in directory.iterdir()) == ["task.yaml"]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names descriptors through /proc")
def test_a_saved_task_and_its_copied_parts_are_fsynced_before_and_after_the_rename(monkeypatch):
    """fsync shows its worth only on power loss; this watches which files and folders are fsync'd
    (each still is, by the real os.fsync) and in what order."""
    synced: list[str] = []
    real_fsync = os.fsync

    def watched(descriptor: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{descriptor}"))
        real_fsync(descriptor)

    spec = TaskSpec(name="durable", kind="classify", labels=[{"name": "a"}, {"name": "b"}])
    first = save_task(spec)
    (first / "head.npz").write_bytes(b"trained weights")
    monkeypatch.setattr(os, "fsync", watched)
    second = save_revision(spec, first)
    assert (second / "head.npz").read_bytes() == b"trained weights"
    head_temp = next(i for i, p in enumerate(synced) if Path(p).name.startswith(".head.npz."))
    yaml_temp = next(i for i, p in enumerate(synced) if Path(p).name.startswith(".task.yaml."))
    assert Path(synced[head_temp]).parent == second and Path(synced[yaml_temp]).parent == second
    assert head_temp < yaml_temp  # the trained part is on disk before the task.yaml that publishes it
    assert str(second) in synced[yaml_temp + 1 :]  # the rename of task.yaml is on disk too
    assert str(second.parent) in synced  # and the new version's folder


def test_cli_new_from_labelled_data_gives_an_examples_mode_task(tmp_path: Path):
    data = tmp_path / "tickets.csv"
    rows = [("refund please", "refund"), ("where is it", "track"), ("refund please", "refund")]
    rows += [(f"money back {i}", "refund") for i in range(8)]
    data.write_text("text,label\n" + "".join(f"{text},{label}\n" for text, label in rows))
    out = tmp_path / "mine.yaml"
    result = CliRunner().invoke(app, ["tasks", "new", "mine", "--labels-from", str(data), "--out", str(out)])
    assert result.exit_code == 0, result.output
    spec, _ = load_task(out)
    assert spec.classify.mode == "examples"
    assert spec.examples_by_label() == {"refund": ["refund please"] + [f"money back {i}" for i in range(4)], "track": ["where is it"]}


def test_promotion_and_rollback_choose_the_active_version():
    from workhorse.tasks.store import active_version, make_active, pin_active, promotions

    for version in (1, 2):
        save_task(TaskSpec(name="promoted", kind="classify", version=version, labels=[{"name": "a"}, {"name": "b"}]))
    assert active_version("promoted") is None and load_task("promoted")[0].version == 2  # the latest, unpinned
    pin_active("promoted")  # a gated candidate comes next: v2 stays active
    save_task(TaskSpec(name="promoted", kind="classify", version=3, labels=[{"name": "a"}, {"name": "b"}]))
    assert load_task("promoted")[0].version == 2
    runner = CliRunner()
    assert runner.invoke(app, ["tasks", "promote", "promoted", "3"]).exit_code == 0
    assert load_task("promoted")[0].version == 3
    result = runner.invoke(app, ["tasks", "rollback", "promoted"])
    assert result.exit_code == 0 and "v2 is active again" in result.output and load_task("promoted")[0].version == 2
    make_active("promoted", 1, reason="fit")  # a user's own new version takes over a pinned task
    assert load_task("promoted")[0].version == 1
    assert [(p["from"], p["to"]) for p in promotions("promoted")] == [(2, 2), (2, 3), (3, 2), (2, 1)]
    listed = json.loads(runner.invoke(app, ["tasks", "list", "--json"]).output)
    assert next(row for row in listed if row["name"] == "promoted")["active"] == 1
    assert isinstance(runner.invoke(app, ["tasks", "promote", "promoted", "9"]).exception, TaskNotFoundError)
