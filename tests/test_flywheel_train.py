"""`workhorse train`: a candidate version is trained, measured against the active version on the
same held-out rows, and promoted only when it passes its gate (the tiny model; real heads)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from workhorse.cli import app
from workhorse.errors import TaskError
from workhorse.evals.datasets import Dataset, Example
from workhorse.flywheel.gate import Measured, decide
from workhorse.flywheel.lora_loop import LoraOptions
from workhorse.flywheel.train import train_and_gate
from workhorse.tasks.oos import OOS_FILE
from workhorse.tasks.store import active_version, load_task

PHRASES = {
    "refund": ["refund my money", "I want a refund", "give the money back", "refund the order"],
    "login": ["login error", "cannot login to the server", "the password is wrong", "login page error"],
    "card": ["my card is lost", "the card was declined", "a new card please", "card not working"],
}


def _rows(path: Path, n: int, seed: int, *, shuffle_labels: bool = False) -> Path:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(list(PHRASES))
        rows.append({"text": f"{rng.choice(PHRASES[label])} {rng.choice(['now', 'today', 'please'])}", "label": label})
    if shuffle_labels:  # the same texts with labels that mean nothing: a worse candidate
        labels = [row["label"] for row in rows]
        rng.shuffle(labels)
        rows = [row | {"label": label} for row, label in zip(rows, labels)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _train(task: str, data: Path, holdout: Path, *extra: str) -> dict:
    result = CliRunner().invoke(app, ["train", task, "--data", str(data), "--holdout", str(holdout), "--json",
                                      "--max-latency-ratio", "100", *extra])  # latency is not under test here
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture
def task(tiny_gguf, tmp_path) -> str:
    # The task's model: created by a first `fit` on the tiny model, so `train` has an incumbent to beat.
    first = CliRunner().invoke(app, ["fit", str(_rows(tmp_path / "seed.jsonl", 12, 0)), "--task", "gated",
                                     "--model", str(tiny_gguf)])
    assert first.exit_code == 0, first.output
    return "gated"


def test_a_better_candidate_is_promoted_and_a_worse_one_is_not(task, tmp_path):
    holdout = _rows(tmp_path / "holdout.jsonl", 30, 1)
    better = _train(task, _rows(tmp_path / "train.jsonl", 90, 2), holdout, "--margin", "0")
    assert better["promoted"] and better["version"] == 2 and active_version(task) == 2
    gate = better["gate"]
    assert gate["incumbent"]["version"] == 1 and gate["candidate"]["accuracy"] >= gate["incumbent"]["accuracy"]
    worse = _train(task, _rows(tmp_path / "noise.jsonl", 90, 3, shuffle_labels=True), holdout)
    assert not worse["promoted"] and worse["version"] == 3
    assert any("accuracy" in reason for reason in worse["gate"]["reasons"])
    spec, directory = load_task(task)
    assert spec.version == 2  # the failed candidate is kept, with its report, but does not answer
    assert json.loads((directory.parent / "v3" / "gate.json").read_text())["passed"] is False


def test_train_needs_held_out_rows(tmp_path):
    result = CliRunner().invoke(app, ["train", "x", "--data", str(_rows(tmp_path / "d.jsonl", 6, 0))])
    assert isinstance(result.exception, TaskError) and "--holdout" in result.exception.hint


def test_the_guards_fail_a_candidate_that_is_slower_or_loses_out_of_scope_recall():
    incumbent = Measured(1, accuracy=0.80, macro_f1=0.8, ece=0.05, oos_recall=0.90, p50_ms=20.0)
    faster_better = Measured(2, accuracy=0.85, macro_f1=0.85, ece=0.05, oos_recall=0.90, p50_ms=21.0)
    assert decide(faster_better, incumbent, rows=100, margin=0.01, max_latency_ratio=1.2).passed
    slow = Measured(2, accuracy=0.85, macro_f1=0.85, ece=0.05, oos_recall=0.90, p50_ms=30.0)
    assert "latency" in " ".join(decide(slow, incumbent, rows=100, margin=0.01, max_latency_ratio=1.2).reasons)
    forgetful = Measured(2, accuracy=0.85, macro_f1=0.85, ece=0.05, oos_recall=0.70, p50_ms=20.0)
    assert "out-of-scope" in " ".join(decide(forgetful, incumbent, rows=100, margin=0.01, max_latency_ratio=1.2).reasons)
    barely = Measured(2, accuracy=0.805, macro_f1=0.8, ece=0.05, oos_recall=0.90, p50_ms=20.0)
    assert not decide(barely, incumbent, rows=100, margin=0.01, max_latency_ratio=1.2).passed


def test_train_reads_a_dataset_folder_built_from_data(task, tmp_path):
    built = CliRunner().invoke(app, ["dataset", "build", task, "--data", str(_rows(tmp_path / "d.jsonl", 200, 4)),
                                     "-o", str(tmp_path / "ds"), "--json"])
    assert built.exit_code == 0, built.output
    result = CliRunner().invoke(app, ["train", task, "--data", str(tmp_path / "ds"), "--json", "--max-latency-ratio", "100"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    manifest = json.loads(built.stdout)
    assert report["train_rows"] == manifest["files"]["train.jsonl"]["rows"]
    assert report["gate"]["rows"] == manifest["files"]["validation.jsonl"]["rows"]


def _with_out_of_scope(n: int, seed: int, split: str) -> Dataset:
    # The PHRASES intents plus requests none of them covers, labelled oos (as CLINC150 labels them).
    rng = random.Random(seed)
    others = ["what is the weather", "play some jazz", "tell me a joke", "set an alarm", "how tall is everest"]
    rows = []
    for i in range(n):
        if i % 4 == 3:
            rows.append(Example(f"{rng.choice(others)} {rng.choice(['now', 'today', 'please'])}", label="oos"))
        else:
            label = rng.choice(list(PHRASES))
            rows.append(Example(f"{rng.choice(PHRASES[label])} {rng.choice(['now', 'today', 'please'])}", label=label))
    return Dataset("intents", split, rows, sorted({*PHRASES, "oos"}), "classify", "en", oos_label="oos")


@pytest.mark.parametrize("method", ["head", "lora"])
def test_a_candidate_chooses_its_own_abstention_on_held_out_out_of_scope_rows(task, method):
    holdout = _with_out_of_scope(40, 1, "val")
    options = LoraOptions(epochs=1, batch_size=8, learning_rate=1e-3, threads=1)
    outcome = train_and_gate(task, _with_out_of_scope(60, 2, "train"), holdout, method=method, lora=options, threads=1,
                             max_latency_ratio=100)
    spec, directory = outcome.fitted.spec, outcome.fitted.directory
    assert spec.classify.out_of_scope is not None and spec.classify.out_of_scope.label == "oos"
    stored, _ = load_task(task, version=spec.version)
    assert stored.classify.out_of_scope == spec.classify.out_of_scope  # saved with the version
    assert (directory / OOS_FILE).is_file() == (spec.classify.out_of_scope.detector == "neighbours")
    assert outcome.gate.candidate.oos_recall is not None


def test_a_task_that_abstains_will_not_train_without_out_of_scope_rows_to_choose_on(task, tmp_path):
    train_and_gate(task, _with_out_of_scope(60, 2, "train"), _with_out_of_scope(40, 1, "val"), threads=1, max_latency_ratio=100)
    no_oos = Dataset("plain", "val", [ex for ex in _with_out_of_scope(40, 3, "val").examples if ex.label != "oos"],
                     sorted(PHRASES), "classify", "en")
    with pytest.raises(TaskError) as error:
        train_and_gate(task, _with_out_of_scope(60, 4, "train"), no_oos, threads=1)
    assert "out-of-scope" in str(error.value) and "clinc150:val" in error.value.hint
