"""Classification: the head trainer on synthetic features, and fit → eval end to end on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from workhorse.cli import app
from workhorse.engine import Engine, EngineConfig, EvalRequest
from workhorse.errors import TaskError, TaskNotTrainedError
from workhorse.evals.datasets import load_file
from workhorse.tasks.classify import HeadClassifier, ScoreClassifier, make_classifier
from workhorse.tasks.fit import fit, task_for_data
from workhorse.tasks.head import UNCALIBRATED_TEMPERATURE, LinearHead, train_head, train_head_cross_validated
from workhorse.tasks.spec import ClassifyOptions, LabelSpec, OutOfScope, TaskSpec
from workhorse.tasks.spec_heads import descriptions_head, examples_head
from workhorse.tasks.store import load_task

PHRASES = {
    "refund": ["refund my money", "I want a refund", "give the money back", "refund the order"],
    "login": ["login error", "cannot login to the server", "the password is wrong", "login page error"],
    "card": ["my card is lost", "the card was declined", "a new card please", "card not working"],
}


def _synthetic(n: int, seed: int) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    centres = {"a": np.full(8, 2.0), "b": np.full(8, -2.0), "c": np.r_[np.full(4, 2.0), np.full(4, -2.0)]}
    labels = [str(x) for x in rng.choice(list(centres), size=n)]
    return np.stack([centres[label] + rng.normal(0, 1.5, 8) for label in labels]).astype(np.float32), labels


def test_head_learns_and_is_calibrated(tmp_path: Path):
    x, y = _synthetic(600, 0)
    head, report = train_head(x, y)
    x_test, y_test = _synthetic(400, 1)
    probs = head.predict_proba(x_test)
    predicted = [head.labels[i] for i in probs.argmax(axis=1)]
    accuracy = np.mean([p == t for p, t in zip(predicted, y_test)])
    assert accuracy > 0.9 and report.holdout_accuracy > 0.85
    # Calibrated: mean confidence is close to accuracy.
    assert abs(probs.max(axis=1).mean() - accuracy) < 0.05
    head.save(tmp_path / "head.npz")
    again = LinearHead.load(tmp_path / "head.npz")
    np.testing.assert_allclose(again.predict_proba(x_test), probs, rtol=1e-6)


def _write_data(path: Path, n: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    with path.open("w") as f:
        for _ in range(n):
            label = str(rng.choice(list(PHRASES)))
            f.write(json.dumps({"text": str(rng.choice(PHRASES[label])) + " " + str(rng.choice(["now", "today", "please"])), "label": label}) + "\n")
    return path


@pytest.fixture(scope="module")
def engine(tiny_model):
    engine = Engine(tiny_model, EngineConfig(n_ctx=2048, n_batch=256, n_slots=16, prefix_slots=2))
    yield engine
    engine.close()


def test_fit_then_classify_on_the_tiny_model(engine, tiny_gguf, tmp_path):
    data = load_file(_write_data(tmp_path / "train.jsonl", 90, 0))
    spec = task_for_data("tiny-intents", data, model=str(tiny_gguf), prompt=None, layers=[0])
    result = fit(spec, data, engine)
    assert result.spec.version == 1 and (result.directory / "head.npz").is_file()
    loaded, directory = load_task("tiny-intents")
    assert loaded.classify.mode == "head" and loaded.label_names == ["card", "login", "refund"]
    classifier = make_classifier(loaded, directory, engine)
    assert isinstance(classifier, HeadClassifier)
    test = load_file(_write_data(tmp_path / "test.jsonl", 30, 1))
    predictions = classifier.classify([ex.text for ex in test.examples])
    accuracy = np.mean([p.label == ex.label for p, ex in zip(predictions, test.examples)])
    assert accuracy >= 0.9  # random weights, but the phrases are distinct token patterns
    assert all(abs(sum(p.probabilities.values()) - 1) < 1e-4 for p in predictions)
    # Refitting makes version 2 and keeps the options.
    assert fit(task_for_data("tiny-intents", data, model=None, prompt=None, layers=None), data, engine).spec.version == 2


def test_head_mode_without_a_head_says_how_to_train(engine):
    spec, directory = load_task("support-intents")
    spec = spec.model_copy(update={"classify": spec.classify.model_copy(update={"mode": "head"})})
    with pytest.raises(TaskNotTrainedError, match="workhorse fit"):
        make_classifier(spec, directory, engine)


def test_score_mode_gives_a_distribution_and_abstains(engine):
    spec, directory = load_task("support-intents")
    options = spec.classify.model_copy(update={"mode": "score", "out_of_scope": OutOfScope(label="other", threshold=0.2)})
    spec = spec.model_copy(update={"classify": options})
    classifier = make_classifier(spec, directory, engine)
    assert isinstance(classifier, ScoreClassifier)
    hits_before = engine.prefix_stats().hits
    predictions = classifier.classify(["I was charged twice", "where is my parcel", "hello"])
    for p in predictions:
        assert set(p.probabilities) == set(spec.label_names)
        assert abs(sum(p.probabilities.values()) - 1) < 1e-6
        top = max(p.probabilities.values())
        assert p.label == ("other" if top < 0.2 else max(p.probabilities, key=p.probabilities.get))
    # The instructions and label list were evaluated once and reused.
    assert engine.prefix_stats().hits - hits_before >= 2


def test_cli_fit_and_eval_json(tiny_gguf, tmp_path):
    runner = CliRunner()
    train = _write_data(tmp_path / "train.jsonl", 60, 2)
    result = runner.invoke(app, ["fit", str(train), "--task", "cli-intents", "--model", str(tiny_gguf), "--json"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["eval", "cli-intents", str(_write_data(tmp_path / "t.jsonl", 20, 3)), "--json", "--latency-sample", "5"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    for key in ("accuracy", "macro_f1", "selective_accuracy", "ece", "items_per_s"):
        assert key in report
    assert {"p50", "p95", "p99"} <= report["latency_ms"].keys()


def test_oos_calibration_balances_in_scope_accuracy_and_oos_recall():
    from workhorse.tasks.oos import calibrate, in_scope_memory

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(2, 16)) * 4
    train = np.vstack([centres[i] + rng.normal(size=(40, 16)) for i in (0, 1)])
    train_labels = ["a"] * 40 + ["b"] * 40
    head, _ = train_head(train, train_labels)
    # Validation: in-scope rows near the training clusters, out-of-scope rows far from both.
    val = np.vstack([centres[0] + rng.normal(size=(20, 16)), rng.normal(size=(20, 16)) * 4 + 30])
    truth = ["a"] * 20 + ["oos"] * 20
    calibration = calibrate(head, in_scope_memory(head, train, train_labels, "oos"), val, truth, "oos")
    # Far-away rows are confidently "a" or "b" to a linear head; only the neighbours tell.
    assert calibration.detector is not None and calibration.validation_score > 0.9
    probs = head.predict_proba(val)
    typicality = calibration.detector.typicality(head, val, probs)
    assert (typicality[20:] < calibration.threshold).mean() > 0.9  # out-of-scope rows abstain
    assert (typicality[:20] >= calibration.threshold).mean() > 0.8  # in-scope rows mostly answer


def test_a_recall_to_keep_buys_in_scope_accuracy_the_balanced_threshold_gives_away():
    from workhorse.tasks.oos import calibrate, recall_lower_bound

    # One label whose rows are confident, out-of-scope rows spread over the same range: the
    # confidence alone overlaps, as on real data. 30 out-of-scope rows among 300.
    rng = np.random.default_rng(1)
    train = np.vstack([rng.normal(size=(60, 4)) + [3, 0, 0, 0], rng.normal(size=(60, 4)) - [3, 0, 0, 0]])
    head, _ = train_head(train, ["a"] * 60 + ["b"] * 60)
    val = np.vstack([rng.normal(size=(270, 4)) * 1.5 + [3, 0, 0, 0], rng.normal(size=(30, 4)) * 1.5])
    truth = ["a"] * 270 + ["oos"] * 30
    balanced = calibrate(head, None, val, truth, "oos")
    kept = calibrate(head, None, val, truth, "oos", min_recall=0.5)
    assert kept.detector is None and balanced.detector is None  # no memory: the confidence alone
    assert recall_lower_bound(round(kept.recall * 30), 30) >= 0.5
    assert kept.recall <= balanced.recall and kept.in_scope_accuracy > balanced.in_scope_accuracy
    # A recall no threshold keeps at 95 % confidence on 30 rows: the most it can get, flagged.
    unreachable = calibrate(head, None, val, truth, "oos", min_recall=0.98)
    assert unreachable.validation_score < 0 and unreachable.recall == max(kept.recall, balanced.recall, unreachable.recall)


def test_the_recall_bound_asks_more_of_fewer_rows():
    from workhorse.tasks.oos import recall_lower_bound

    assert recall_lower_bound(94, 100) == pytest.approx(0.888, abs=0.001)  # the Wilson bound, one-sided 95 %
    assert recall_lower_bound(93, 100) < 0.88 < recall_lower_bound(94, 100)
    assert recall_lower_bound(9, 10) < recall_lower_bound(90, 100) < recall_lower_bound(900, 1000) < 0.9
    assert recall_lower_bound(0, 10) == 0.0 and recall_lower_bound(10, 10) < 1.0


def test_fit_with_out_of_scope_validation_abstains_on_unseen_requests(engine, tiny_gguf, tmp_path):
    from workhorse.evals.datasets import Dataset, Example

    data = load_file(_write_data(tmp_path / "train.jsonl", 90, 0))
    val_rows = load_file(_write_data(tmp_path / "val.jsonl", 30, 2)).examples
    strangers = ["zebra quantum violin", "purple mountain sonata", "glacier pancake orbit", "velvet thunder atlas"]
    val_rows += [Example(f"{s} {i}", label="oos") for i, s in enumerate(strangers * 5)]
    validation = Dataset("val", "val", val_rows, sorted({e.label for e in val_rows}), "classify", "en", oos_label="oos")
    spec = task_for_data("scoped", data, model=str(tiny_gguf), prompt=None, layers=None, pooling="last+mean")
    result = fit(spec, data, engine, validation=validation)
    out_of_scope = result.spec.classify.out_of_scope
    assert out_of_scope is not None and out_of_scope.label == "oos"
    loaded, directory = load_task("scoped")
    assert loaded.classify.pooling == "last+mean"
    classifier = make_classifier(loaded, directory, engine)
    if out_of_scope.detector == "neighbours":
        assert (directory / "oos.npz").is_file()
    unseen = classifier.classify(["zebra pancake sonata", "quantum glacier thunder"])
    known = classifier.classify([ex.text for ex in load_file(_write_data(tmp_path / "t.jsonl", 20, 3)).examples])
    assert all(p.label == "oos" for p in unseen)
    assert np.mean([p.label != "oos" for p in known]) >= 0.8


def test_tasks_abstain_chooses_again_for_a_recall_and_later_fits_keep_it(engine, tiny_gguf, tmp_path):
    runner = CliRunner()
    train = _write_data(tmp_path / "train.jsonl", 90, 0)
    val = tmp_path / "val.jsonl"
    rows = [json.loads(line) for line in _write_data(tmp_path / "v.jsonl", 30, 2).read_text().splitlines()]
    strangers = ["zebra quantum violin", "purple mountain sonata", "glacier pancake orbit", "velvet thunder atlas"]
    rows += [{"text": f"{s} {i}", "label": "oos"} for i, s in enumerate(strangers * 5)]
    val.write_text("".join(json.dumps(r) + "\n" for r in rows))
    fitted = runner.invoke(app, ["fit", str(train), "--task", "ab-intents", "--model", str(tiny_gguf), "--validation",
                                 f"{val}", "--oos-recall", "0.5", "--json"])
    assert fitted.exit_code == 0, fitted.output
    assert json.loads(fitted.stdout)["out_of_scope"]["min_recall"] == 0.5  # the task's rows name the label
    before, _ = load_task("ab-intents")
    result = runner.invoke(app, ["tasks", "abstain", "ab-intents", str(val), "--oos-recall", "0.6", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    spec, directory = load_task("ab-intents")
    assert spec.version == before.version + 1 and summary["directory"] == str(directory)
    out_of_scope = spec.classify.out_of_scope
    assert out_of_scope is not None and out_of_scope.min_recall == 0.6 and summary["min_recall"] == 0.6
    assert summary["out_of_scope_recall"] >= 0.6 and (directory / "head.npz").is_file()
    assert (directory / "oos.npz").is_file() == (out_of_scope.detector == "neighbours")
    answers = make_classifier(spec, directory, engine).classify([f"{s} again" for s in strangers])
    assert np.mean([a.label == "oos" for a in answers]) >= 0.5
    # The setting stays with the task: a refit chooses its threshold for the same recall.
    again = runner.invoke(app, ["fit", str(train), "--task", "ab-intents", "--validation", f"{val}", "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["out_of_scope"]["min_recall"] == 0.6
    # Rows without out-of-scope ones cannot choose a threshold; nothing is saved.
    refused = runner.invoke(app, ["tasks", "abstain", "ab-intents", str(train)])
    assert refused.exit_code != 0 and "no out-of-scope rows" in str(refused.exception)
    assert load_task("ab-intents")[0].version == spec.version + 1
    assert runner.invoke(app, ["fit", str(train), "--task", "ab-intents", "--oos-recall", "0.9"]).exit_code != 0


def test_cli_eval_escalate_prints_the_perfect_upstream_curve(tiny_gguf, tmp_path):
    runner = CliRunner()
    train = _write_data(tmp_path / "train.jsonl", 60, 2)
    assert runner.invoke(app, ["fit", str(train), "--task", "esc-intents", "--model", str(tiny_gguf)]).exit_code == 0
    png = tmp_path / "curve.png"
    result = runner.invoke(app, ["eval", "esc-intents", str(_write_data(tmp_path / "t.jsonl", 20, 3)), "--json",
                                 "--latency-sample", "2", "--escalate", "--png", str(png)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    curve = report["escalation_curve"]
    assert [p["upstream"] for p in curve] == ["perfect"] * 21
    assert curve[0]["escalation_rate"] == 0 and curve[0]["accuracy"] == pytest.approx(report["accuracy"])
    assert curve[-1]["accuracy"] == 1.0 and all(b["accuracy"] >= a["accuracy"] for a, b in zip(curve, curve[1:]))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_calibrating_escalation_for_a_target_rate_saves_a_new_version(engine, tiny_gguf, tmp_path):
    runner = CliRunner()
    train = _write_data(tmp_path / "train.jsonl", 60, 2)
    assert runner.invoke(app, ["fit", str(train), "--task", "cal-intents", "--model", str(tiny_gguf)]).exit_code == 0
    dev = _write_data(tmp_path / "dev.jsonl", 40, 5)
    result = runner.invoke(app, ["tasks", "calibrate", "cal-intents", str(dev), "--rate", "0.25",
                                 "--base-url", "http://127.0.0.1:9/v1", "--model", "big"])
    assert result.exit_code == 0, result.output
    spec, directory = load_task("cal-intents")
    assert spec.version == 2 and (directory / "head.npz").is_file()  # the head came along
    assert spec.escalation.mode == "threshold" and spec.escalation.target_rate == 0.25
    assert spec.escalation.upstream is not None and spec.escalation.upstream.model == "big"
    predictions = make_classifier(spec, directory, engine).classify([ex.text for ex in load_file(dev).examples])
    escalated = np.mean([p.confidence < spec.escalation.threshold for p in predictions])
    # Recomputed on another engine configuration: batch-shape numerics may move an item that sits
    # at the threshold (one item is 0.025 of these 40).
    assert escalated == pytest.approx(0.25, abs=0.05)


# -- score mode: whole-label scoring, the label prior, honest confidence ------------------------

def _score_spec(tiny_gguf, **options):
    from workhorse.tasks.spec import TaskSpec

    labels = [
        {"name": "card_lost", "description": "the card is lost or stolen"},
        {"name": "card_declined", "description": "a payment with the card was refused"},
        {"name": "refund", "description": "the customer wants money back"},
    ]
    return TaskSpec.model_validate({"name": "zs", "kind": "classify", "model": str(tiny_gguf), "labels": labels,
                                    "classify": {"mode": "score", **options}})


def _by_hand(engine, classifier, text):
    """Each label's log-probability from plain, uncached requests: prompt + label, summed over its tokens."""
    base = classifier._item_tokens(text)
    scores = []
    for tokens in classifier._label_tokens:
        full = list(base) + list(tokens)
        logits = engine.evaluate([EvalRequest(full, logits_at=list(range(len(base) - 1, len(full) - 1)))])[0].logits
        rows = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
        rows -= np.log(np.exp(rows).sum(axis=1, keepdims=True))
        scores.append(sum(rows[j, tok] for j, tok in enumerate(tokens)))
    return np.array(scores)


def test_label_requests_cover_every_label_with_the_fewest_paths():
    from workhorse.tasks.classify import label_requests

    paths = label_requests([[1], [2, 3], [2, 3, 4], [2, 5], [6], [7, 8, 9]])
    assert sorted(paths) == [(2, 3), (7, 8)]  # () and (2,) are the first rows of (2, 3)
    assert label_requests([[1], [2]]) == [()]


def test_score_mode_scores_every_token_of_a_label(engine, tiny_gguf):

    classifier = ScoreClassifier(_score_spec(tiny_gguf, score_calibration="none"), engine)
    assert all(len(t) > 1 for t in classifier._label_tokens[:2])  # multi-token labels
    assert classifier._label_tokens[0][0] == classifier._label_tokens[1][0]  # sharing their first token
    for text in ["my card is gone", "please give my money back"]:
        got = classifier._label_scores([text])[0]
        np.testing.assert_allclose(got, _by_hand(engine, classifier, text), atol=2e-3)
    # Labels that share a first token no longer tie (the first-token score gave them the same).
    scores = classifier._label_scores(["my card is gone"])[0]
    assert abs(scores[0] - scores[1]) > 1e-2


@pytest.mark.parametrize("n_slots", [16, 2])  # 2: the label paths go in groups
def test_score_mode_label_logprobs_match_a_by_hand_computation(tiny_model, tiny_gguf, n_slots):
    # float32 KV without flash attention: only summation order differs (see test_engine_batching).
    exact = Engine(tiny_model, EngineConfig(n_ctx=2048, n_batch=256, n_slots=n_slots, prefix_slots=2, kv_type="f32",
                                            flash_attention="off"))
    try:
        spec = _score_spec(tiny_gguf, score_calibration="none")
        spec = spec.model_copy(update={"labels": spec.labels + [
            spec.labels[0].model_copy(update={"name": "card_lost_abroad"}),
            spec.labels[2].model_copy(update={"name": "refund_late"}),
        ]})
        classifier = ScoreClassifier(spec, exact)
        assert len(classifier._paths) > 2  # more paths than the 2 slots
        texts = ["my card is gone", "please give my money back", "the shop refused my card"]
        for text, got in zip(texts, classifier._label_scores(texts), strict=True):
            np.testing.assert_allclose(got, _by_hand(exact, classifier, text), atol=1e-4)
    finally:
        exact.close()


def test_contextual_calibration_divides_out_the_content_free_prior(engine, tiny_gguf):
    from workhorse.tasks.classify import CONTENT_FREE_INPUTS

    plain = ScoreClassifier(_score_spec(tiny_gguf, score_calibration="none"), engine)
    calibrated = ScoreClassifier(_score_spec(tiny_gguf, score_calibration="contextual"), engine)
    prior = plain.distributions(list(CONTENT_FREE_INPUTS)).mean(axis=0)
    texts = ["my card is gone", "the shop refused my card", "refund please"]
    ratio = np.log(calibrated.distributions(texts)) - np.log(plain.distributions(texts)) + np.log(prior)
    np.testing.assert_allclose(ratio, ratio[:, :1] * np.ones_like(ratio), atol=1e-6)  # p_cal ∝ p / prior
    assert np.ptp(np.log(prior)) > 1e-3  # the prior was not uniform, so this tested something


def test_score_temperature_shrinks_confidence_toward_uniform(engine, tiny_gguf):
    sharp = ScoreClassifier(_score_spec(tiny_gguf, score_temperature=1.0), engine)
    soft = ScoreClassifier(_score_spec(tiny_gguf, score_temperature=4.0), engine)
    texts = ["my card is gone", "refund please"]
    a, b = sharp.classify(texts), soft.classify(texts)
    assert all(p.label == q.label for p, q in zip(a, b))  # the ranking stays
    assert all(1 / 3 <= q.confidence < p.confidence for p, q in zip(a, b))


def test_score_mode_flags_content_free_input_instead_of_labelling_it(engine, tiny_gguf):
    from workhorse.tasks.classify import ClassifyTask

    task = ClassifyTask(_score_spec(tiny_gguf), None, engine)
    answers = task.run(["", "   ", "N/A", "?!", "my card is gone"])
    for answer in answers[:4]:
        assert answer.answer is None and answer.confidence == 0.0 and answer.details["content_free"] is True
    assert answers[4].answer in ("card_lost", "card_declined", "refund") and "content_free" not in answers[4].details


def test_cli_eval_mode_overrides_the_tasks_own(tiny_gguf, tmp_path):
    runner = CliRunner()
    train = _write_data(tmp_path / "train.jsonl", 60, 2)
    assert runner.invoke(app, ["fit", str(train), "--task", "mode-intents", "--model", str(tiny_gguf)]).exit_code == 0
    test = str(_write_data(tmp_path / "t.jsonl", 12, 3))
    reports = {}
    for mode in ("head", "score"):
        result = runner.invoke(app, ["eval", "mode-intents", test, "--json", "--latency-sample", "2", "--mode", mode])
        assert result.exit_code == 0, result.output
        reports[mode] = json.loads(result.stdout)
    assert reports["head"]["task"]["mode"] == "head" and reports["score"]["task"]["mode"] == "score"
    assert reports["head"]["accuracy"] != reports["score"]["accuracy"] or reports["head"]["ece"] != reports["score"]["ece"]
    assert runner.invoke(app, ["eval", "mode-intents", test, "--mode", "both"]).exit_code != 0


def test_a_few_examples_per_label_make_a_calibrated_head():
    x, y = _synthetic(15, 0)  # about five per label
    head, report = train_head_cross_validated(x, y)
    x_test, y_test = _synthetic(400, 1)
    probs = head.predict_proba(x_test)
    accuracy = np.mean([head.labels[i] == t for i, t in zip(probs.argmax(axis=1), y_test)])
    assert accuracy > 0.85 and 0 < report.holdout_accuracy <= 1
    # The temperature came from out-of-fold predictions: confidence does not claim more than the accuracy.
    assert probs.max(axis=1).mean() < accuracy + 0.05
    one_each, single = train_head_cross_validated(x[:3] * 0 + np.eye(3, 8) * 4, ["a", "b", "c"])
    assert single.temperature == UNCALIBRATED_TEMPERATURE and one_each.temperature == UNCALIBRATED_TEMPERATURE


def _examples_spec(model: Path, **options) -> TaskSpec:
    labels = [LabelSpec(name=label, examples=phrases[:3]) for label, phrases in PHRASES.items()]
    return TaskSpec(name="few", kind="classify", model=str(model), labels=labels, classify=ClassifyOptions(**options))


def test_labels_with_examples_mean_examples_mode(tiny_gguf):
    assert _examples_spec(tiny_gguf).classify.mode == "examples"
    described = TaskSpec(name="zero", kind="classify", labels=[LabelSpec(name="a"), LabelSpec(name="b", examples=["x"])])
    assert described.classify.mode == "descriptions"
    with pytest.raises(ValueError, match="examples for every label; these have none: a"):
        TaskSpec(name="zero", kind="classify", labels=described.labels, classify=ClassifyOptions(mode="examples"))
    # The task's own examples count for the label they answer.
    with_task_examples = TaskSpec(name="t", kind="classify", labels=[LabelSpec(name="a", examples=["x"]), LabelSpec(name="b")],
                                  examples=[{"input": "y", "output": "b"}])
    assert with_task_examples.classify.mode == "examples" and with_task_examples.examples_by_label()["b"] == ["y"]


def test_examples_mode_classifies_without_fit_and_keeps_its_head(engine, tiny_gguf, tmp_path, monkeypatch):
    monkeypatch.setenv("WORKHORSE_HOME", str(tmp_path))
    spec = _examples_spec(tiny_gguf, pooling="last+mean")  # random weights: the mean keeps the words' identity
    classifier = make_classifier(spec, None, engine)
    assert isinstance(classifier, HeadClassifier)
    items = [phrases[3] for phrases in PHRASES.values()]  # the fourth phrase of each label: not an example
    predictions = classifier.classify(items)
    assert [p.label for p in predictions] == list(PHRASES)
    assert all(abs(sum(p.probabilities.values()) - 1) < 1e-4 for p in predictions)
    cached = list((tmp_path / "heads").glob("examples-*.npz"))
    assert len(cached) == 1
    # Loaded again: the stored head is used, not refitted.
    again = examples_head(spec, classifier.features)
    np.testing.assert_array_equal(again.coef, classifier.head.coef)
    # Other examples, another head.
    changed = spec.model_copy(update={"labels": [label.model_copy(update={"examples": label.examples[:2]}) for label in spec.labels]})
    make_classifier(changed, None, engine)
    assert len(list((tmp_path / "heads").glob("examples-*.npz"))) == 2


def test_descriptions_mode_answers_from_the_label_texts(engine, tiny_gguf, tmp_path, monkeypatch):
    monkeypatch.setenv("WORKHORSE_HOME", str(tmp_path))
    labels = [LabelSpec(name=label, description=phrases[0]) for label, phrases in PHRASES.items()]
    spec = TaskSpec(name="zero", kind="classify", model=str(tiny_gguf), labels=labels)
    assert spec.classify.mode == "descriptions" and spec.classify.features_pooling == "last+mean"
    classifier = make_classifier(spec, None, engine)
    # The label texts themselves land on their own labels; probabilities are a distribution.
    predictions = classifier.classify([f"{label}: {phrases[0]}" for label, phrases in PHRASES.items()])
    assert [p.label for p in predictions] == list(PHRASES)
    assert all(abs(sum(p.probabilities.values()) - 1) < 1e-4 for p in predictions)
    assert len(list((tmp_path / "heads").glob("descriptions-*.npz"))) == 1
    head = descriptions_head(spec, classifier.features)  # from the cache
    np.testing.assert_allclose(head.predict_proba(classifier.features.extract(["refund"])),
                               classifier.head.predict_proba(classifier.features.extract(["refund"])), rtol=1e-6)


def test_eval_compares_modes_on_the_same_data(tiny_gguf, tmp_path):
    runner = CliRunner()
    task = tmp_path / "modes.yaml"
    labels = "\n".join(f"  - name: {label}\n    examples: {json.dumps(phrases[:3])}" for label, phrases in PHRASES.items())
    task.write_text(f"name: modes\nkind: classify\nmodel: {tiny_gguf}\nclassify: {{pooling: last+mean}}\nlabels:\n{labels}\n")
    data = _write_data(tmp_path / "t.jsonl", 12, 4)
    for mode in ("examples", "descriptions", "score"):
        result = runner.invoke(app, ["eval", str(task), str(data), "--mode", mode, "--json", "--latency-sample", "2"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["task"]["mode"] == mode
    human = runner.invoke(app, ["eval", str(task), str(data), "--latency-sample", "2"], env={"COLUMNS": "160"})
    assert human.exit_code == 0, human.output
    for shown in ("(examples mode)", "per label (lowest F1 first)", "most over-answered label", *PHRASES):
        assert shown in human.output
    bare = tmp_path / "bare.yaml"
    bare.write_text(f"name: bare\nkind: classify\nmodel: {tiny_gguf}\nlabels: [{{name: a}}, {{name: b}}]\n")
    result = runner.invoke(app, ["eval", str(bare), str(data), "--mode", "examples"])
    assert isinstance(result.exception, TaskError) and "these have none: a, b" in result.exception.message
    assert "examples" in result.exception.hint


@pytest.mark.parametrize("mode", ["examples", "descriptions"])
def test_every_feature_mode_flags_content_free_input_too(engine, tiny_gguf, mode):
    from workhorse.tasks.classify import ClassifyTask

    spec = _examples_spec(tiny_gguf, mode=mode, out_of_scope=OutOfScope(label="other", threshold=0.0))
    answers = ClassifyTask(spec, None, engine).run(["N/A", "my card is gone", "?!"])
    assert [a.answer for a in answers] == ["other", answers[1].answer, "other"] and answers[1].answer in PHRASES
    assert answers[0].details["content_free"] is True and answers[0].confidence == 0.0 and "content_free" not in answers[1].details
