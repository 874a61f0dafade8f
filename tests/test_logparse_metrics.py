"""GA, PA, FGA and FTA on small parses whose scores are worked out by hand in each test."""

from __future__ import annotations

import pytest

from workhorse.logparse.metrics import normalize_template, parsing_metrics

A, B, C = "open <*>", "close <*> after <*>", "shutdown"


def test_perfect_parse_scores_one_everywhere() -> None:
    truth = [A, A, B, C, B]
    m = parsing_metrics(truth, [0, 0, 1, 2, 1], truth)
    assert m == {
        "ga": 1.0,
        "pa": 1.0,
        "fga": 1.0,
        "fta": 1.0,
        "n_lines": 5,
        "n_true_templates": 3,
        "n_predicted_templates": 3,
    }


def test_over_merged_group() -> None:
    # Lines 0-2 (true A, A, B) merged into one group: only group {3} = C is right.
    m = parsing_metrics([A, A, B, C], ["g", "g", "g", "h"], ["<*> <*>"] * 3 + [C])
    assert m["ga"] == pytest.approx(1 / 4)
    assert m["pa"] == pytest.approx(1 / 4)
    # 1 correct group of 2 predicted, 3 true: P = 1/2, R = 1/3, F1 = 2/5.
    assert m["fga"] == pytest.approx(0.4)
    assert m["fta"] == pytest.approx(0.4)
    assert (m["n_true_templates"], m["n_predicted_templates"]) == (3, 2)


def test_split_group() -> None:
    # True A on lines 0-2 split into {0, 1} and {2}; templates all right, so PA stays 1.
    truth = [A, A, A, B]
    m = parsing_metrics(truth, [0, 0, 1, 2], truth)
    assert m["ga"] == pytest.approx(1 / 4)
    assert m["pa"] == 1.0
    # 1 correct group ({3}) of 3 predicted, 2 true: P = 1/3, R = 1/2, F1 = 2/5.
    assert m["fga"] == pytest.approx(0.4)
    assert m["fta"] == pytest.approx(0.4)


def test_right_grouping_wrong_template() -> None:
    # Grouping perfect, but group A's template over-generalised.
    m = parsing_metrics([A, A, B], [7, 7, 9], ["<*> <*>", "<*> <*>", B])
    assert m["ga"] == 1.0 and m["fga"] == 1.0
    assert m["pa"] == pytest.approx(1 / 3)
    # 1 correct template of 2 predicted, 2 true: F1 = 1/2.
    assert m["fta"] == pytest.approx(0.5)
    assert m["fta"] < m["fga"]


def test_group_with_mixed_templates_is_not_a_correct_template() -> None:
    # The group is right, but its lines disagree on the template: no single template to credit.
    m = parsing_metrics([A, A], [0, 0], [A, "open file"])
    assert m["fga"] == 1.0 and m["fta"] == 0.0
    assert m["pa"] == pytest.approx(1 / 2)


def test_whitespace_is_collapsed_before_comparing() -> None:
    truth = ["open  <*>", " open <*>", "close\t<*> "]
    m = parsing_metrics(truth, ["a", "a", "b"], ["open <*>", "open <*>  ", "close <*>"])
    assert m["n_true_templates"] == 2  # "open  <*>" and " open <*>" are one template
    assert m["ga"] == m["pa"] == m["fga"] == m["fta"] == 1.0
    assert normalize_template("  a \t b\n") == "a b"


def test_group_ids_may_be_any_hashable() -> None:
    m = parsing_metrics([A, B], [("x", 1), None], [A, B])
    assert m["ga"] == 1.0 and m["n_predicted_templates"] == 2


def test_length_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="one of each per log line"):
        parsing_metrics([A, B], [0], [A, B])
    with pytest.raises(ValueError):
        parsing_metrics([A, B], [0, 1], [A])


def test_empty_input_raises() -> None:
    with pytest.raises(ValueError, match="no log lines"):
        parsing_metrics([], [], [])
