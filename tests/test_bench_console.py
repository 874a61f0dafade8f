"""`bench console` on a small log: the fill goes through the writer (rollup included) and every
page it times answers 200."""

from __future__ import annotations

from workhorse.bench.console_bench import pages, run
from workhorse.calllog import CallLog
from workhorse.calllog.rollup import read_rollup
from workhorse.calllog.totals import CallTotals


def test_the_bench_fills_a_log_and_times_every_page(tmp_path):
    path = tmp_path / "console.db"
    report = run(path, 3000, repeat=2)
    assert report["calls"] == 3000 and report["fill"]["corrected"] > 0
    assert set(report["pages"]) == set(pages(path, 3000))
    assert all(page["p50_ms"] > 0 for page in report["pages"].values())
    with CallLog.open_readonly(path) as log:
        expected = CallTotals()
        for call in log.iterate():
            expected.add(call)
        rolled = CallTotals()
        with log.reading() as db:
            for _, totals in read_rollup(db):
                rolled.merge(totals)
    assert rolled.calls == expected.calls == 3000 and rolled.judged == expected.judged
    assert rolled.sources == expected.sources and rolled.latency == expected.latency
