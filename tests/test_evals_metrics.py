"""Metrics against small cases computed by hand."""

from __future__ import annotations

import json

import pytest

from workhorse.evals import (
    classification_report,
    entity_f1,
    expected_calibration_error,
    extraction_report,
    latency_summary,
    multilabel_report,
)


def test_accuracy_macro_f1_and_per_label_match_a_hand_computation() -> None:
    y_true = ["a", "a", "a", "b", "b", "c"]
    y_pred = ["a", "a", "b", "b", "c", "c"]
    report = classification_report(y_true, y_pred)
    # a: P 2/2, R 2/3, F1 0.8;  b: P 1/2, R 1/2, F1 0.5;  c: P 1/2, R 1/1, F1 2/3
    assert report["n"] == 6
    assert report["accuracy"] == pytest.approx(4 / 6)
    assert report["per_label"]["a"] == pytest.approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3})
    assert report["per_label"]["b"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert report["per_label"]["c"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert report["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    json.dumps(report)


def test_macro_f1_counts_labels_only_predicted_and_none_predictions() -> None:
    report = classification_report(["a", "a", "b", "b"], ["a", "x", "b", None])
    # labels a, b, x and "<none>": F1 a = 2/3 (P 1, R 1/2), b = 2/3, x = 0, <none> = 0
    assert set(report["per_label"]) == {"a", "b", "x", "<none>"}
    assert report["per_label"]["x"]["support"] == 0
    assert report["macro_f1"] == pytest.approx((2 / 3 + 2 / 3) / 4)
    # An explicit label list restricts the average.
    restricted = classification_report(["a", "a", "b", "b"], ["a", "x", "b", None], labels=["a", "b"])
    assert restricted["macro_f1"] == pytest.approx(2 / 3)


def test_top_confusions_are_counted_and_ordered() -> None:
    y_true = ["a", "a", "a", "b", "b", "c", "c"]
    y_pred = ["b", "b", "a", "a", "c", "a", "a"]
    confusions = classification_report(y_true, y_pred)["top_confusions"]
    assert confusions == [
        {"true": "a", "pred": "b", "count": 2},
        {"true": "c", "pred": "a", "count": 2},
        {"true": "b", "pred": "a", "count": 1},
        {"true": "b", "pred": "c", "count": 1},
    ]


def test_top_confusions_keep_ten() -> None:
    y_true = [f"t{i}" for i in range(15)]
    y_pred = [f"p{i}" for i in range(15)]
    assert len(classification_report(y_true, y_pred)["top_confusions"]) == 10


def test_oos_recall_precision_and_in_scope_accuracy() -> None:
    y_true = ["oos", "oos", "oos", "a", "b", "c"]
    y_pred = ["oos", "a", "oos", "a", "oos", "oos"]
    report = classification_report(y_true, y_pred, oos_label="oos")
    assert report["oos_recall"] == pytest.approx(2 / 3)  # 3 were oos, 2 found
    assert report["oos_precision"] == pytest.approx(2 / 4)  # 4 said oos, 2 were
    assert report["in_scope_accuracy"] == pytest.approx(1 / 3)
    assert report["accuracy"] == pytest.approx(3 / 6)
    no_oos = classification_report(["a", "b"], ["a", "a"], oos_label="oos")
    assert no_oos["oos_recall"] is None and no_oos["oos_precision"] is None
    assert "oos_recall" not in classification_report(["a"], ["a"])


def test_ece_matches_a_hand_computed_value() -> None:
    # Bin (14/15, 1]: confidences 0.95, 0.95, accuracy 1/2 -> |0.5 - 0.95| * 2/4 = 0.225
    # Bin (9/15, 10/15]: confidences 0.65, 0.65, accuracy 1  -> |1 - 0.65| * 2/4 = 0.175
    report = classification_report(["a", "a", "a", "a"], ["a", "b", "a", "a"], [0.95, 0.95, 0.65, 0.65])
    assert report["ece"] == pytest.approx(0.4)
    # Perfect calibration within one bin: confidence 0.75, 3 of 4 right.
    assert expected_calibration_error([1, 1, 1, 0], [0.75] * 4) == pytest.approx(0.0)
    # Different confidences in one bin are averaged before the difference: 0.94 and 0.96 -> 0.95.
    assert expected_calibration_error([1, 0], [0.94, 0.96]) == pytest.approx(0.45)
    # A confidence of 0 lands in the first bin rather than being dropped.
    assert expected_calibration_error([1], [0.0]) == pytest.approx(1.0)


def test_selective_accuracy_uses_the_most_confident_rows() -> None:
    # Sorted by confidence, correctness is 1 1 1 1 1 1 1 0 1 0; the input order is shuffled.
    by_rank = [(0.99, 1), (0.95, 1), (0.9, 1), (0.85, 1), (0.8, 1), (0.7, 1), (0.6, 1), (0.5, 0), (0.4, 1), (0.3, 0)]
    order = [3, 9, 0, 7, 5, 1, 8, 2, 6, 4]
    rows = [by_rank[i] for i in order]
    y_pred = ["a" if right else "b" for _, right in rows]
    report = classification_report(["a"] * 10, y_pred, [c for c, _ in rows])
    assert report["selective_accuracy"] == pytest.approx({"0.5": 1.0, "0.8": 7 / 8, "0.9": 8 / 9, "1.0": 0.8})


def test_classification_report_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        classification_report(["a", "b"], ["a"])
    with pytest.raises(ValueError):
        classification_report(["a"], ["a"], [1.5])


def test_multilabel_report() -> None:
    report = multilabel_report([{"a", "b"}, {"c"}, set()], [{"a"}, {"c", "d"}, None])
    # tp a, c; 3 predicted; 3 true
    assert report["micro_precision"] == pytest.approx(2 / 3)
    assert report["micro_recall"] == pytest.approx(2 / 3)
    assert report["micro_f1"] == pytest.approx(2 / 3)
    assert report["macro_f1"] == pytest.approx((1 + 0 + 1 + 0) / 4)  # a, b, c, d
    assert report["exact_match"] == pytest.approx(1 / 3)
    json.dumps(report)


def test_extraction_report_with_schema_invalid_and_missing_outputs() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    gold = [{"city": "Paris", "tags": ["a", "b"]}, {"city": "Rome"}, {"city": "Oslo"}, {"city": "Lima"}]
    pred = [
        {"city": "  PARIS ", "tags": ["b", "a"]},  # valid; normalised string and multiset match
        {"city": 5},  # an object, but not valid against the schema
        None,  # no JSON at all
        {"city": "Lima", "country": "Peru"},  # right, plus a spurious field
    ]
    report = extraction_report(gold, pred, schema=schema)
    assert report["json_valid_rate"] == pytest.approx(2 / 4)
    assert report["field_exact_match"] == pytest.approx(3 / 5)  # Paris, tags, Lima
    assert report["all_fields_exact"] == pytest.approx(1 / 4)  # Lima's item has an extra field
    assert report["spurious_fields"] == 1
    assert report["per_field"]["city"] == {"exact": 0.5, "support": 4}
    assert report["per_field"]["tags"] == {"exact": 1.0, "support": 1}
    assert extraction_report(gold, pred)["json_valid_rate"] == pytest.approx(3 / 4)  # no schema: any object
    json.dumps(report)


def test_extraction_compares_lists_as_multisets_and_keeps_types() -> None:
    assert extraction_report([{"x": ["a", "a"]}], [{"x": ["a"]}])["field_exact_match"] == 0.0
    assert extraction_report([{"x": 6}], [{"x": "6"}])["field_exact_match"] == 0.0
    same_object = extraction_report([{"x": {"hour": 9, "minute": 5}}], [{"x": {"minute": 5, "hour": 9}}])
    assert same_object["all_fields_exact"] == 1.0
    # Extra fields with empty values (null for an absent slot) are not spurious.
    assert extraction_report([{"x": 1}], [{"x": 1, "y": None}])["all_fields_exact"] == 1.0


def test_entity_f1() -> None:
    gold = [{"name": ["张三", "李四"], "address": ["北京"]}, {"company": ["阿里"]}]
    pred = [{"name": ["张三"], "address": ["上海"]}, {"company": ["阿里"], "name": "王五"}]
    report = entity_f1(gold, pred)
    assert (report["precision"], report["recall"], report["f1"]) == pytest.approx((0.5, 0.5, 0.5))
    assert report["per_type"]["company"]["f1"] == pytest.approx(1.0)
    assert report["per_type"]["address"]["f1"] == 0.0
    assert report["per_type"]["name"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    # A type mismatch is a miss: the pair is (type, string).
    assert entity_f1([{"name": ["阿里"]}], [{"company": ["阿里"]}])["f1"] == 0.0
    assert entity_f1([{"name": ["阿里"]}], [None])["recall"] == 0.0


def test_latency_summary() -> None:
    seconds = [i / 1000 for i in range(1, 101)]  # 1 … 100 ms
    summary = latency_summary(seconds, 2.0)
    assert summary["p50"] == pytest.approx(50.5)
    assert summary["p95"] == pytest.approx(95.05)
    assert summary["p99"] == pytest.approx(99.01)
    assert summary["mean"] == pytest.approx(50.5)
    assert summary["items_per_s"] == pytest.approx(50.0)
    assert latency_summary(seconds)["items_per_s"] is None
    with pytest.raises(ValueError):
        latency_summary([])


def test_the_most_over_answered_label_is_named_with_its_ratio() -> None:
    y_true = ["a", "a", "b", "b", "c", "c"]
    y_pred = ["a", "c", "c", "c", "c", "b"]
    worst = classification_report(y_true, y_pred)["most_over_answered"]
    assert worst == {"label": "c", "ratio": 2.0, "answered": 4, "support": 2}
    assert classification_report(y_true, y_true)["most_over_answered"]["ratio"] == 1.0
