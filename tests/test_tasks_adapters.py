"""A task version with a LoRA adapter (`adapter.gguf` beside its task.yaml) runs with it everywhere:
`run`, `eval`, a refit, a revision and the training gate (the tiny model, random adapters).

Each task version's head is fitted on the features of its model as adapted, so running it
without the adapter is refused (`check_adapter`): a command that forgot the adapter fails here."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest
from test_flywheel_train import _rows
from tiny_model import write_tiny_adapter
from typer.testing import CliRunner

from workhorse.cli import app
from workhorse.engine import Adapter, Engine, EngineConfig, LlamaModel
from workhorse.errors import TaskError
from workhorse.evals.datasets import load_file
from workhorse.pipeline import build_pipeline
from workhorse.tasks.classify import make_classifier
from workhorse.tasks.engines import adapter_of, open_task_engine
from workhorse.tasks.fit import fit, task_for_data
from workhorse.tasks.store import ADAPTER_FILE, load_task, save_revision

CONFIG = EngineConfig(n_ctx=1024, n_batch=128, n_slots=8, prefix_slots=2)
TEXTS = ["my card is lost now", "login error today", "refund the order please", "the card was declined now"]


@pytest.fixture
def tuned(tiny_gguf, tmp_path) -> str:
    """Task `tuned` v1: a head fitted on the tiny model with a LoRA adapter."""
    path, _ = write_tiny_adapter(tmp_path / "lora.gguf", ("attn_q", "attn_v", "ffn_down"), size=2.0)
    data = load_file(_rows(tmp_path / "train.jsonl", 60, 0))
    model = LlamaModel(tiny_gguf, name="tiny")
    engine = Engine(model, replace(CONFIG, adapter=Adapter.from_file(path)))
    fit(task_for_data("tuned", data, model=str(tiny_gguf), prompt=None, layers=None), data, engine)
    engine.close()
    return "tuned"


def _confidences(spec, directory, engine) -> list[float]:
    """The head's answers on `engine`, checks bypassed (to see what a forgotten adapter would give)."""
    return [answer.confidence for answer in make_classifier(spec, directory, engine).classify(TEXTS)]


def test_a_fitted_version_keeps_the_adapter_and_runs_only_with_it(tuned, tiny_gguf, tmp_path):
    spec, directory = load_task(tuned)
    adapter = adapter_of(directory)
    assert adapter is not None and (directory / ADAPTER_FILE).is_file()
    base = Engine(LlamaModel(tiny_gguf), CONFIG)
    adapted = open_task_engine(spec, directory, threads=1)
    try:
        assert adapted.adapter == adapter
        with pytest.raises(TaskError, match="needs its adapter"):
            build_pipeline(spec, directory, base, escalate=False)
        expected = _confidences(spec, directory, adapted)
        assert max(abs(a - b) for a, b in zip(expected, _confidences(spec, directory, base))) > 0.02
    finally:
        base.close()
        adapted.close()
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"text": text}) + "\n" for text in TEXTS))
    ran = CliRunner().invoke(app, ["run", tuned, str(source), "--no-log", "--no-escalate", "--threads", "1"])
    assert ran.exit_code == 0, ran.output
    answered = [json.loads(line)["confidence"] for line in ran.stdout.splitlines() if line.startswith("{")]
    assert answered == pytest.approx(expected, abs=0.01)
    evaluated = CliRunner().invoke(app, ["eval", tuned, str(_rows(tmp_path / "test.jsonl", 12, 3)), "--json",
                                         "--latency-sample", "2", "--threads", "1"])
    assert evaluated.exit_code == 0, evaluated.output


def test_a_revision_and_a_refit_carry_the_adapter_on_the_same_model(tuned, tiny_gguf, tmp_path):
    spec, directory = load_task(tuned)
    adapter = adapter_of(directory)
    revised = save_revision(spec.model_copy(update={"description": "revised"}), directory)
    assert adapter_of(revised) == adapter
    data = str(_rows(tmp_path / "more.jsonl", 40, 1))
    refit = CliRunner().invoke(app, ["fit", data, "--task", tuned, "--threads", "1", "--json"])
    assert refit.exit_code == 0, refit.output
    refitted = json.loads(refit.stdout)
    assert refitted["version"] == 3 and adapter_of(load_task(tuned)[1]) == adapter
    other_model = shutil.copy(tiny_gguf, tmp_path / "other.gguf")  # the adapter belongs to the task's model only
    moved = CliRunner().invoke(app, ["fit", data, "--task", tuned, "--model", str(other_model), "--threads", "1"])
    assert moved.exit_code == 0, moved.output
    assert adapter_of(load_task(tuned)[1]) is None


def test_training_gates_the_candidate_with_the_adapter_it_carries(tuned, tmp_path):
    result = CliRunner().invoke(app, ["train", tuned, "--data", str(_rows(tmp_path / "train2.jsonl", 90, 2)), "--holdout",
                                      str(_rows(tmp_path / "holdout.jsonl", 30, 4)), "--json", "--margin", "0",
                                      "--max-latency-ratio", "100"])
    assert result.exit_code == 0, result.output
    outcome = json.loads(result.stdout)
    assert outcome["gate"]["incumbent"]["version"] == 1 and outcome["version"] == 2
    assert adapter_of(load_task(tuned, version=outcome["version"])[1]) == adapter_of(load_task(tuned, version=1)[1])
