"""The call log on a real PostgreSQL server (started by the `postgres` fixture): the same calls,
corrections, rollup and reads as in SQLite; several writers on one log; a read-only opening; the
console's queries; and `workhorse serve` killed with SIGKILL under load losing no acknowledged call."""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor
from itertools import count

import pytest
from test_serve import CLASSIFY_TASK, acknowledged_before_sigkill

from workhorse.calllog import CallLog, CallRecord
from workhorse.calllog.rollup import read_rollup
from workhorse.calllog.store import wait_committed
from workhorse.calllog.totals import CallTotals
from workhorse.errors import CallLogError
from workhorse.serve.console import queries

_names = count()


@pytest.fixture
def url(postgres) -> str:
    return postgres.database(f"calls_{next(_names)}")


def _call(i: int, **extra) -> CallRecord:
    values = dict(task="intents", model="m", input=f"ticket {i}", source="local", task_version=2, output="refund",
                  final_answer="refund", confidence=i / 100, latency_ms=10.0 + i)
    return CallRecord(**(values | extra))


def _rolled(log: CallLog) -> CallTotals:
    total = CallTotals()
    with log.reading() as db:
        for _, totals in read_rollup(db):
            total.merge(totals)
    return total


def test_calls_corrections_and_reads_round_trip(url):
    with CallLog(url) as log:
        ids = [wait_committed(log.record(_call(i, request_ref=f"r{i}", details={"probabilities": {"refund": 0.5}})))
               for i in range(30)]
        assert ids == list(range(1, 31))
        assert wait_committed(log.feedback(ids[3], {"label": "login"}, by="dana")) is True
        assert wait_committed(log.feedback(10_000, {"label": "login"})) is False
        call = log.get(ids[3])
        assert call["feedback"] == {"label": "login"} and call["feedback_by"] == "dana"
        assert call["details"] == {"probabilities": {"refund": 0.5}} and call["escalated"] is False
        assert [c["id"] for c in log.list(limit=3)] == [30, 29, 28]
        assert [c["id"] for c in log.iterate()] == ids
        assert set(log.find_refs(["r1", "r2", "nope"])) == {"r1", "r2"}
        assert log.count() == 30
        expected = CallTotals()
        for c in log.iterate():
            expected.add(c)
        assert _rolled(log) == expected and expected.judged == 1 and expected.correct == 0
    with CallLog.open_readonly(url) as reader:
        assert reader.count() == 30
        with pytest.raises(CallLogError, match="read-only"):
            reader.record(_call(99))


def test_several_writers_on_one_log_lose_nothing(url):
    """Two logs (as two servers would open it) and eight threads each: every call lands once and
    the rollup's hours, written under row locks, add up to the calls."""
    logs = [CallLog(url), CallLog(url)]
    try:
        def write(worker: int) -> list[int]:
            log = logs[worker % 2]
            return [wait_committed(log.record(_call(worker * 1000 + i))) for i in range(60)]

        with ThreadPoolExecutor(16) as pool:
            ids = [i for batch in pool.map(write, range(16)) for i in batch]
        assert len(ids) == len(set(ids)) == 960
        assert logs[0].count() == 960
        assert _rolled(logs[0]).calls == 960
    finally:
        for log in logs:
            log.close()


def test_servers_opening_a_fresh_database_at_once_migrate_it_once(url):
    with ThreadPoolExecutor(4) as pool:
        opened = list(pool.map(lambda _: CallLog(url), range(4)))
    assert {log.schema_version for log in opened} == {5}
    for log in opened:
        log.close()


def test_the_consoles_queries_read_postgres_alike(url):
    with CallLog(url) as log:
        for i in range(12):
            escalated = i % 3 == 0
            wait_committed(log.record(_call(i, escalated=escalated, upstream_answer="login" if escalated else None,
                                             source="upstream" if escalated else "local")))
        wait_committed(log.record(CallRecord(task="app-logs", model="m", input="Accepted password for bob", source="local",
                                             output={"template_id": 7, "template": "Accepted password for <*>"})))
        with log.reading() as db:
            page, before = queries.list_calls(db, queries.CallFilter(task="intents", text="TICKET 1"), limit=2)
            assert [c["input"] for c in page] == ["ticket 11", "ticket 10"] and before == page[-1]["id"]
            rest, more = queries.list_calls(db, queries.CallFilter(task="intents", text="TICKET 1"), before=before, limit=2)
            assert [c["input"] for c in rest] == ["ticket 1"] and more is None
            disagreeing = queries.review_queue(db, "intents", "disagreement")
            assert [c["input"] for c in disagreeing] == ["ticket 0", "ticket 3", "ticket 6", "ticket 9"]
            assert queries.template_counts(db, "app-logs")[7]["lines"] == 1
            assert queries.overview(db, since=None).total.calls == 13


def test_a_missing_server_is_a_clear_error():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once the probe is closed
    with pytest.raises(CallLogError, match="cannot open the call log postgresql://u:\\*\\*\\*@127.0.0.1") as error:
        CallLog(f"postgresql://u:secret@127.0.0.1:{port}/x", busy_timeout_s=2)
    assert "secret" not in str(error.value) and "PostgreSQL is running" in error.value.hint


def test_serve_killed_under_load_keeps_every_acknowledged_call(url, tiny_gguf, tmp_path):
    (tmp_path / "toy-intents.yaml").write_text(CLASSIFY_TASK.format(model=tiny_gguf))
    acknowledged = acknowledged_before_sigkill(tiny_gguf, tmp_path / "toy-intents.yaml", url, clients=8, at_least=300)
    with CallLog.open_readonly(url) as log:
        logged = {call["id"]: call["input"] for call in log.iterate()}
    assert len(acknowledged) >= 300 and set(acknowledged) <= set(logged)
    assert all(logged[i].startswith(("ticket ", "item ")) for i in acknowledged)


def test_the_sqlite_migrations_build_the_postgres_schema(url):
    """One list of migrations for both: SQLite's REAL becomes 8-byte floats (unix seconds keep
    their fraction), its `IS NOT` between columns PostgreSQL's `IS DISTINCT FROM`."""
    with CallLog(url) as log, log.reading() as db:
        types = dict(db.execute("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'calls'")
                     .fetchall())
        [index] = db.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'calls_review_disagreement'").fetchone()
        [identity] = db.execute("SELECT is_identity FROM information_schema.columns "
                                "WHERE table_name = 'calls' AND column_name = 'id'").fetchone()
    assert types["created_at"] == types["confidence"] == "double precision" and types["id"] == "bigint"
    assert identity == "YES" and "IS DISTINCT FROM" in index
    assert {"details", "upstream_request", "feedback_by", "request_ref"} <= set(types)
