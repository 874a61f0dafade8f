"""`workhorse bench flywheel` on the tiny model and a small labelled set: the real pipeline, call
log, dataset builder, trainer and gate, and a gold teacher answering over real HTTP."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from workhorse.bench import flywheel_bench
from workhorse.bench.flywheel_bench import PERFECT_TEACHER, plan
from workhorse.bench.teacher import GoldTeacher
from workhorse.calllog import CallLog
from workhorse.calllog.prices import PriceTable
from workhorse.cli import app
from workhorse.escalation.escalate import escalate_one
from workhorse.escalation.upstream import UpstreamClient
from workhorse.evals.datasets import load_file
from workhorse.tasks.spec import EscalationOptions, LabelSpec, TaskSpec

PHRASES = {
    "refund": ["refund my money", "I want a refund", "give the money back", "refund the order"],
    "login": ["login error", "cannot login to the server", "the password is wrong", "login page error"],
    "card": ["my card is lost", "the card was declined", "a new card please", "card not working"],
}
ROUND_KEYS = {"round", "traffic_rows", "train_rows", "rows_by_source", "test_accuracy", "escalation_rate_for_98",
              "upstream_calls", "upstream_cost", "version", "promoted", "seconds"}


def _rows(n: int, seed: int, tag: str) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = rng.choice(list(PHRASES))
        # Every fifth item carries an email: the pipeline sends it redacted, the teacher must still place it.
        contact = f" write to user{i}@example.com" if i % 5 == 0 else ""
        rows.append({"text": f"{rng.choice(PHRASES[label])} {tag}{i}{contact}", "label": label})
    return rows


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def labelled(tmp_path: Path) -> tuple[Path, Path, list[dict]]:
    test = _rows(30, 2, "t")
    train = _rows(120, 1, "r") + [test[0]]  # a test text in the train split: it must never become traffic
    return _write(tmp_path / "train.jsonl", train), _write(tmp_path / "test.jsonl", test), test


def _bench(tiny_gguf: Path, train: Path, test: Path, workdir: Path, *extra: str) -> dict:
    result = CliRunner().invoke(app, ["bench", "flywheel", "--train", str(train), "--test", str(test), "--model", str(tiny_gguf),
                                      "--seed-per-label", "4", "--validation-per-label", "4", "--workdir", str(workdir),
                                      "--max-latency-ratio", "100", "--json", *extra])  # latency is not under test here
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_two_rounds_stay_within_the_budget_and_learn_from_the_teacher(tiny_gguf, labelled, tmp_path):
    train, test, test_rows = labelled
    workdir = tmp_path / "run"
    report = _bench(tiny_gguf, train, test, workdir, "--rounds", "2", "--budget", "0.25")

    assert report["teacher"] == PERFECT_TEACHER and report["method"] == "head"
    assert report["seed_per_label"] == 4 and report["budget"] == 0.25 and 0.0 <= report["gold_ceiling_accuracy"] <= 1.0
    data = report["data"]
    assert data["dropped_test_overlap"] == 1 and data["seed_rows"] == 12 and data["validation_rows"] == 12
    assert data["train_split_rows"] == 121 and data["test_split_rows"] == 30
    rounds = report["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2] and all(ROUND_KEYS <= set(r) for r in rounds)
    assert rounds[0]["promoted"] and rounds[0]["rows_by_source"] == {"data": 12}

    log = CallLog.open_readonly(workdir / "calls.db")
    calls = list(log.iterate())
    gold = {row["text"]: row["label"] for row in map(json.loads, train.read_text().splitlines())}
    assert not {c["input"] for c in calls} & {row["text"] for row in test_rows}  # no test text reached the log
    assert len(calls) == data["traffic_rows"] == sum(r["traffic_rows"] for r in rounds)

    upstream_so_far = 0
    for row in rounds[1:]:
        assert 0 < row["upstream_calls"] <= int(0.25 * row["traffic_rows"])  # the cap holds, and the teacher was used
        upstream_so_far += row["upstream_calls"] - row["upstream_failed"]
        assert row["rows_by_source"] == {"data": 12, "upstream": upstream_so_far}
        assert row["gold_agreement_by_source"] == {"upstream": 1.0}  # the teacher is perfect
        built = (workdir / "datasets" / "flywheel" / f"v{row['round']}" / "train.jsonl").read_text().splitlines()
        taught = [r for r in map(json.loads, built) if r["source"] == "upstream"]
        assert len(taught) == upstream_so_far and all(r["label"] == gold[r["text"]] for r in taught)
    escalated = [c for c in calls if c["escalated"]]
    assert len(escalated) == sum(r["upstream_calls"] for r in rounds) == report["teacher_stats"]["requests"]
    assert all(c["upstream_answer"] == gold[c["input"]] and c["source"] == "upstream" for c in escalated)
    assert report["teacher_stats"]["missed"] == 0


@pytest.mark.parametrize(("budget", "expected"), [("0", 0), ("1", 1.0)])
def test_a_budget_of_nothing_or_everything(tiny_gguf, labelled, tmp_path, budget, expected):
    train, test, _ = labelled
    report = _bench(tiny_gguf, train, test, tmp_path / "run", "--rounds", "1", "--budget", budget, "--no-gold-ceiling",
                    "--traffic-per-round", "20")
    [_, first] = report["rounds"]
    assert first["traffic_rows"] == 20 and first["upstream_calls"] == expected * 20
    assert report["gold_ceiling_accuracy"] is None


def test_the_cap_stops_escalating_when_the_budget_is_spent(tiny_gguf, labelled, tmp_path, monkeypatch):
    # A threshold that escalates every answer: only the cap keeps the teacher to a quarter of the traffic.
    monkeypatch.setattr(flywheel_bench._Loop, "_threshold", lambda self, number, spec, directory: 1.0)
    train, test, _ = labelled
    report = _bench(tiny_gguf, train, test, tmp_path / "run", "--rounds", "1", "--budget", "0.25", "--no-gold-ceiling",
                    "--traffic-per-round", "22")
    [_, first] = report["rounds"]
    assert first["upstream_calls"] == 5 and first["threshold"] == 1.0
    calls = list(CallLog.open_readonly(tmp_path / "run" / "calls.db").iterate())
    assert len(calls) == 22 and sum(c["escalated"] for c in calls) == 5


def test_an_unknown_method_is_refused_by_the_trainer(tiny_gguf, labelled, tmp_path):
    train, test, _ = labelled
    result = CliRunner().invoke(app, ["bench", "flywheel", "--train", str(train), "--test", str(test), "--model",
                                      str(tiny_gguf), "--method", "bogus", "--workdir", str(tmp_path / "run")])
    assert result.exit_code != 0 and "bogus" in str(result.exception)


def test_the_plan_keeps_seed_validation_and_traffic_apart_and_is_seeded(labelled):
    train, test = load_file(labelled[0]), load_file(labelled[1])
    first = plan(train, test, seed_per_label=4, validation_per_label=4, rounds=2, traffic_per_round=None, seed=0)
    again = plan(train, test, seed_per_label=4, validation_per_label=4, rounds=2, traffic_per_round=None, seed=0)
    other = plan(train, test, seed_per_label=4, validation_per_label=4, rounds=2, traffic_per_round=None, seed=1)
    assert first == again and first.seed != other.seed
    seed, validation = {ex.text for ex in first.seed}, {ex.text for ex in first.validation}
    traffic = [ex.text for part in first.traffic for ex in part]
    assert len(first.seed) == len(first.validation) == 12 and len(first.traffic) == 2
    assert not seed & validation and not (seed | validation) & set(traffic)
    assert not set(traffic) & {ex.text for ex in test.examples} and first.dropped_test_overlap == 1


def test_the_teacher_answers_with_the_gold_label_over_http_even_when_the_item_was_redacted():
    text = "refund the order, my address is jane.doe@example.com"
    with GoldTeacher({text: "refund", "cannot login": "login"}) as teacher:
        spec = TaskSpec(name="t", kind="classify", labels=[LabelSpec(name=n) for n in PHRASES],
                        escalation=EscalationOptions(mode="threshold", upstream=teacher.upstream_options()))
        client = UpstreamClient(spec.escalation.upstream)
        try:
            taught = escalate_one(spec, client, PriceTable(), text, "low_confidence")
            assert taught.answer == "refund" and taught.redactions == {"EMAIL": 1} and taught.prompt_tokens > 0
            assert teacher.stats.by_redacted == 1  # it arrived as "… is EMAIL_1"
            assert escalate_one(spec, client, PriceTable(), "Cannot  LOGIN", "low_confidence").answer == "login"
            unknown = escalate_one(spec, client, PriceTable(), "a text it never saw", "low_confidence")
            assert unknown.failed and teacher.stats.missed == 1
        finally:
            client.close()
        assert teacher.stats.requests == 3 and teacher.stats.by_normalised == 1


def test_a_lora_round_trains_an_adapter_and_gates_it(tiny_gguf, labelled, tmp_path):
    """`--method lora`: round 1 trains LoRA with the head on the log's dataset, exports the adapter
    for llama.cpp and gates the candidate on the same validation rows as head mode."""
    pytest.importorskip("peft", reason="the train extra is not installed")
    train, test, _ = labelled
    workdir = tmp_path / "run"
    report = _bench(tiny_gguf, train, test, workdir, "--rounds", "1", "--budget", "0.25", "--method", "lora",
                    "--no-gold-ceiling")
    assert report["method"] == "lora" and [r["round"] for r in report["rounds"]] == [0, 1]
    trained = report["rounds"][1]
    assert ROUND_KEYS <= set(trained) and trained["candidate_version"] == 2
    assert trained["lora"]["steps"] > 0 and trained["gate"]["incumbent_accuracy"] is not None
    assert trained["version"] == (2 if trained["promoted"] else 1) and 0.0 <= trained["test_accuracy"] <= 1.0
    assert (workdir / "home" / "tasks" / "flywheel" / "v2" / "adapter.gguf").is_file()
