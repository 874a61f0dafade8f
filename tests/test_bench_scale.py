"""`bench scale`'s parts on small inputs: the job's file and the call log's write rate under
concurrent writers (SQLite, and PostgreSQL on the fixture's real server)."""

from __future__ import annotations

import json

from workhorse.bench.scale_bench import write_items, write_rate
from workhorse.calllog import CallLog


def test_the_job_repeats_the_texts_with_ids_of_their_own(tmp_path):
    path = tmp_path / "items.jsonl"
    assert write_items(["a", "b", "c"], 7, path) == 7
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["text"] for r in rows] == ["a", "b", "c", "a", "b", "c", "a"] and len({r["id"] for r in rows}) == 7


def test_write_rate_counts_every_committed_call(tmp_path, postgres):
    for target in (str(tmp_path / "calls.db"), postgres.database("scale_rate")):
        rate = write_rate(target, writers=4, calls_per_writer=25)
        assert rate["calls"] == 100 and rate["calls_per_s"] > 0
        with CallLog.open_readonly(target) as log:
            assert log.count() == 100
