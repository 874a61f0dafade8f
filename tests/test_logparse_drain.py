"""The drain3 baseline on tiny synthetic logs."""

from __future__ import annotations

from workhorse.logparse.drain_baseline import DrainResult, render, run_drain
from workhorse.logparse.metrics import parsing_metrics


def test_same_event_with_different_values_is_one_group() -> None:
    lines = [
        "Invalid user bob from 1.2.3.4",
        "Invalid user alice from 10.0.0.12",
        "Invalid user mallory from 192.168.1.1:22",
    ]
    result = run_drain(lines)
    assert isinstance(result, DrainResult)
    assert len(set(result.groups)) == 1 and result.n_clusters == 1
    assert result.templates == ["Invalid user <*> from <*>"] * 3
    assert result.seconds > 0


def test_final_template_is_reported_for_early_lines() -> None:
    # The first line alone would be its own template; once the second joins, both get the merged one.
    result = run_drain(["session opened for root", "session opened for admin"])
    assert result.groups[0] == result.groups[1]
    assert result.templates == ["session opened for <*>"] * 2


def test_different_events_stay_apart_and_score_perfectly() -> None:
    lines = [
        "Accepted password for bob port 22",
        "Connection closed by 1.2.3.4 [preauth]",
        "Accepted password for eve port 2222",
        "Connection closed by 5.6.7.8 [preauth]",
        "Received signal 0x1f",
        "Received signal 0x2a",
    ]
    truth = [
        "Accepted password for <*> port <*>",
        "Connection closed by <*> [preauth]",
        "Accepted password for <*> port <*>",
        "Connection closed by <*> [preauth]",
        "Received signal <*>",
        "Received signal <*>",
    ]
    result = run_drain(lines)
    assert result.n_clusters == 3
    assert result.templates == truth
    m = parsing_metrics(truth, result.groups, result.templates)
    assert m["ga"] == m["pa"] == m["fga"] == m["fta"] == 1.0


def test_numbers_inside_words_are_not_masked() -> None:
    result = run_drain(["worker10 started", "worker10 started"])
    assert result.templates == ["worker10 started"] * 2


def test_render_turns_every_mask_into_a_wildcard() -> None:
    assert render("from <IP> code <NUM> at <HEX> and <*>") == "from <*> code <*> at <*> and <*>"


def test_empty_input() -> None:
    result = run_drain([])
    assert result.groups == [] and result.templates == [] and result.n_clusters == 0
