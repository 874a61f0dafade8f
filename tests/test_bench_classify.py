"""The chat baseline of `bench classify`: label parsing, and a real run on the tiny model."""

from __future__ import annotations

from workhorse.bench.classify_bench import chat_baseline, parse_label
from workhorse.evals.datasets import Dataset, Example

LABELS = ["cancel_order", "change_order", "track_refund", "refund"]


def test_parse_label_prefers_the_first_line_then_the_earliest_mention():
    assert parse_label("cancel_order", LABELS) == "cancel_order"
    assert parse_label("Cancel Order\nbecause…", LABELS) == "cancel_order"
    assert parse_label("The label is: track_refund.", LABELS) == "track_refund"
    assert parse_label("refund, or maybe change_order", LABELS) == "refund"
    assert parse_label("I cannot help with that", LABELS) is None
    assert parse_label("", LABELS) is None


def test_chat_baseline_runs_through_llama_cpp_high_level_api(tiny_gguf):
    data = Dataset(
        name="toy", split="test", kind="classify", language="en", labels=LABELS,
        examples=[Example(text=t, label=label) for t, label in [("stop my order", "cancel_order"), ("where is my refund", "track_refund")]],
    )
    result = chat_baseline(str(tiny_gguf), "tiny", data, threads=2, limit=2)
    assert result.n == 2 and result.items_per_s > 0
    assert 0 <= result.accuracy <= 1 and 0 <= result.invalid_rate <= 1


def test_constrained_overhead_measures_both_sides(tiny_gguf):
    from workhorse.bench.classify_bench import constrained_overhead

    result = constrained_overhead(str(tiny_gguf), threads=1, repeats=1)
    assert result["tokens"] > 0
    assert result["ms_per_token_plain"] > 0 and result["ms_per_token_constrained"] > 0
