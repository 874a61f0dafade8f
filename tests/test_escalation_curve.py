"""The accuracy–escalation curve and the escalation rules."""

from __future__ import annotations

import pytest

from workhorse.escalation.curve import accuracy_at_rate, escalation_curve, rate_at_threshold, rate_for_accuracy
from workhorse.escalation.policy import escalation_reason, threshold_for_rate
from workhorse.tasks.answer import LocalAnswer as Answer
from workhorse.tasks.spec import TaskSpec


def test_a_perfect_upstream_fixes_the_least_confident_first():
    truth = ["a", "b", "a", "b"]
    local = ["a", "a", "a", "a"]  # items 1 and 3 wrong
    confidence = [0.9, 0.2, 0.8, 0.4]  # and the least confident
    curve = escalation_curve(truth, local, confidence, points=5)
    assert [round(p["accuracy"], 2) for p in curve] == [0.5, 0.75, 1.0, 1.0, 1.0]
    assert [p["escalation_rate"] for p in curve] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert accuracy_at_rate(curve, 0.5) == 1.0


def test_a_real_upstream_can_make_things_worse():
    truth, local, confidence = ["a", "b"], ["a", "b"], [0.1, 0.9]
    curve = escalation_curve(truth, local, confidence, upstream=["b", None], upstream_name="small", points=3)
    assert [p["accuracy"] for p in curve] == [1.0, 0.5, 0.5]  # the upstream got item 0 wrong; item 1 was not asked
    assert curve[0]["upstream"] == "small"


def test_threshold_for_a_target_rate_escalates_that_share():
    confidences = [i / 100 for i in range(100)]
    threshold = threshold_for_rate(confidences, 0.2)
    assert rate_at_threshold(confidences, threshold) == pytest.approx(0.2)
    with pytest.raises(ValueError):
        threshold_for_rate(confidences, 1.5)


SPEC = """
name: esc
kind: classify
labels: [{name: refund}, {name: login}, {name: fraud}]
classify: {out_of_scope: {label: other, threshold: 0.3}}
escalation:
  mode: threshold
  threshold: 0.6
  labels: [fraud]
  max_input_chars: 50
  out_of_scope: true
  upstream: {base_url: "http://127.0.0.1:1/v1", model: big}
"""


@pytest.mark.parametrize(
    ("text", "answer", "reason"),
    [
        ("short", Answer("refund", 0.9), None),
        ("short", Answer("refund", 0.5), "low_confidence"),
        ("short", Answer("fraud", 0.99), "label"),
        ("short", Answer("other", 0.8), "out_of_scope"),
        ("x" * 60, Answer("refund", 0.99), "long_input"),
        ("short", Answer({"a": 1}, 0.99, {"valid": False}), "invalid_output"),
    ],
)
def test_escalation_rules(text, answer, reason):
    from workhorse.tasks.store import parse_task

    assert escalation_reason(parse_task(SPEC), text, answer) == reason


def test_never_and_always():
    from workhorse.tasks.store import parse_task

    spec = parse_task(SPEC)
    never = spec.model_copy(update={"escalation": spec.escalation.model_copy(update={"mode": "never"})})
    always = spec.model_copy(update={"escalation": spec.escalation.model_copy(update={"mode": "always"})})
    assert escalation_reason(never, "x" * 99, Answer("fraud", 0.0)) is None
    assert escalation_reason(always, "short", Answer("refund", 1.0)) == "always"
    assert isinstance(spec, TaskSpec)


def test_the_rate_a_perfect_upstream_needs_for_an_accuracy():
    truth = ["a"] * 10
    local = ["a"] * 7 + ["b"] * 3  # three wrong …
    confidence = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.95, 0.1, 0.2, 0.99]  # … two least confident, one most confident
    assert rate_for_accuracy(truth, local, confidence, 0.7) == 0.0
    assert rate_for_accuracy(truth, local, confidence, 0.9) == 0.2  # the two least confident fix two
    assert rate_for_accuracy(truth, local, confidence, 0.98) == 1.0  # the confident mistake is reached last
    assert rate_for_accuracy(["a"] * 50, ["a"] * 49 + ["b"], [1.0] * 49 + [0.0], 0.98) == 0.0  # 49/50 is 98 %
