"""`workhorse bench logs`: cold figures with blocks, the time to a new system's first lines, and
leave-one-system-out, on generated dpkg logs without a model (fast)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from workhorse.bench.logs_bench import run
from workhorse.bench.logs_loso import DEFAULTS, RuleSet, loso
from workhorse.cli import app
from workhorse.evals.dpkg_log import write_loghub
from workhorse.logparse.grouping import Evidence


def test_cold_figures_and_the_time_to_the_first_lines(tmp_path):
    write_loghub(tmp_path, 1500, seed=1)
    grouped = run(tmp_path, None, repeats=1, first=1000)["systems"]["Dpkg"]
    assert grouped["first_lines"] == 1000 and 0 < grouped["seconds_first_lines"] <= 1500 / grouped["lines_per_s_cold"]
    assert grouped["GA"] == 1.0 and grouped["templates"] <= 20 and grouped["model_calls"] == 0
    line_by_line = run(tmp_path, None, repeats=1, block=1)["systems"]["Dpkg"]
    assert line_by_line["first_lines"] == 1500  # no more lines than that
    assert line_by_line["templates"] > 5 * grouped["templates"]  # no evidence across lines: a template per package


def test_leave_one_system_out_chooses_on_the_others(tmp_path):
    for seed in (1, 2, 3):
        write_loghub(tmp_path, 800, seed=seed, name=f"Dpkg{seed}")
    merges_states = RuleSet(Evidence(open_distinct=2, min_distinct=2))  # every varying word a value: dpkg's states too
    report = loso([tmp_path], grid=[merges_states, DEFAULTS])
    assert set(report["systems"]) == {"Dpkg1", "Dpkg2", "Dpkg3"}
    for row in report["systems"].values():
        assert row["chosen"] == {"open_distinct": 16, "min_distinct": 5, "open_share": 0.5, "shared_words": 3, "siblings": 3}
        assert row["GA"] == row["defaults"]["GA"] >= 0.98
    # with the bad set alone there is nothing to choose, and the figures show it
    alone = loso([tmp_path], grid=[merges_states], names=["Dpkg1", "Dpkg2"])
    assert alone["systems"]["Dpkg1"]["chosen"]["open_distinct"] == 16  # the defaults are always in the grid
    assert len(alone["grid"]) == 2


def test_the_command_prints_loso_and_the_new_columns(tmp_path):
    for seed in (1, 2):
        write_loghub(tmp_path, 400, seed=seed, name=f"Dpkg{seed}")
    result = CliRunner().invoke(app, ["bench", "logs", "--data", str(tmp_path), "--loso", "--json"])
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.stdout)["systems"]) == {"Dpkg1", "Dpkg2"}
    result = CliRunner().invoke(app, ["bench", "logs", "--data", str(tmp_path), "--no-model", "--repeats", "1", "--json",
                                      "--systems", "Dpkg2"])
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)["systems"]["Dpkg2"]
    assert row["block"] == 1000 and row["first_lines"] == 400 and "drain3" in row
    missing = CliRunner().invoke(app, ["bench", "logs", "--data", str(tmp_path), "--no-model", "--systems", "Nope"])
    assert missing.exit_code != 0
