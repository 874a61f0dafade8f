"""`workhorse dataset build|show` over a real call log: which answer a text keeps (feedback >
data > upstream > confident local), duplicates and conflicts, the split's stability as the log
grows, the versioned output, the filters, the CLI's JSON and errors, and that `fit`/`eval` read
the files it writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from workhorse.calllog import CallLog, CallRecord
from workhorse.calllog.store import wait_committed
from workhorse.errors import WorkhorseError
from workhorse.evals.datasets import load, load_file
from workhorse.flywheel.candidates import Selection
from workhorse.flywheel.dataset import BuildOptions, build_dataset
from workhorse.flywheel.output import changed_files, read_manifest, resolve
from workhorse.flywheel.since import parse_since
from workhorse.flywheel.split import SplitPercents, normalise
from workhorse.tasks.store import load_task

TASK = """\
name: intents
kind: classify
labels:
  - {name: refund, description: money back}
  - {name: login, description: cannot sign in}
  - {name: cancel, description: stop an order}
classify:
  out_of_scope: {label: oos, threshold: 0.3}
"""
NOW = time.time()


@pytest.fixture
def task_file(tmp_path) -> Path:
    path = tmp_path / "intents.yaml"
    path.write_text(TASK)
    return path


def _call(text: str, source: str = "local", answer=None, confidence: float | None = 0.95, age_s: float = 0.0,
          **extra) -> CallRecord:
    """A logged call of `intents`: answered locally, upstream (the large model's answer) or by the fallback."""
    fields = {"output": answer, "confidence": confidence, "final_answer": answer}
    if source == "upstream":
        fields = {"output": "refund", "confidence": 0.4, "upstream_answer": answer, "final_answer": answer, "escalated": True}
    elif source == "fallback":
        fields = {"final_answer": answer}
    return CallRecord(task="intents", model="m", input=text, source=source, task_version=1, created_at=NOW - age_s,
                      **(fields | extra))


def _log(path: Path, calls: list[CallRecord], feedback: dict[int, object] | None = None) -> list[int]:
    """Write the calls (and feedback by index into `calls`) through the real writer; their ids."""
    with CallLog(path) as log:
        ids = [wait_committed(log.record(call)) for call in calls]
        for index, value in (feedback or {}).items():
            assert wait_committed(log.feedback(ids[index], value))
    return ids


def _build(task_file: Path, db: Path, out: Path, **options) -> tuple[Path, dict]:
    spec, _ = load_task(task_file)
    with CallLog.open_readonly(db) as log:
        built = build_dataset(spec, out, BuildOptions(**options), log)
    return built.directory, built.manifest


def _rows(version: Path) -> dict[str, dict]:
    """Every row of a version by text, with its split."""
    rows = {}
    for split in ("train", "validation", "test"):
        for line in (version / f"{split}.jsonl").read_text().splitlines():
            row = json.loads(line)
            rows[row["text"]] = row | {"split": split}
    return rows


def test_precedence_feedback_then_upstream_then_confident_local(task_file, tmp_path):
    db = tmp_path / "calls.db"
    _log(db, [
        _call("my card was charged twice", answer="refund"),                      # 0 local, confident
        _call("MY CARD WAS CHARGED TWICE", answer="refund"),                      # 1 the same text
        _call("My card was charged  TWICE", "upstream", answer="cancel"),          # 2 upstream beats local
        _call("my card was charged twice", answer="refund", age_s=100),            # 3 corrected below: feedback wins
        _call("cannot sign in", "upstream", answer="login"),                       # 4 upstream
        _call("cannot sign in", answer="refund", confidence=0.99),                 # 5 overruled by the upstream
        _call("maybe a refund?", answer="refund", confidence=0.5),                 # 6 below --min-confidence
        _call("too slow", "fallback", answer="refund"),                            # 7 fallback: never used
        _call("slow but corrected", "fallback", answer="refund"),                  # 8 its correction is used
        _call("stop my order", answer="cancel"),                                   # 9 confident local
        _call("who are you", answer="oos", confidence=0.99),                       # 10 a local abstention
        _call("bad correction", answer="refund"),                                  # 11 feedback names no label of the task
    ], feedback={3: "login", 8: {"label": "cancel", "note": "late"}, 11: {"label": "shipping"}})
    version, manifest = _build(task_file, db, tmp_path / "out")
    rows = _rows(version)
    key = {normalise(text): row for text, row in rows.items()}
    assert key["my card was charged twice"]["label"] == "login"
    assert key["my card was charged twice"]["source"] == "feedback"
    assert rows["cannot sign in"]["label"] == "login" and rows["cannot sign in"]["source"] == "upstream"
    assert rows["slow but corrected"]["label"] == "cancel" and rows["slow but corrected"]["source"] == "feedback"
    assert rows["stop my order"] | {"split": None, "created": None} == {
        "text": "stop my order", "label": "cancel", "source": "local", "call_id": 10, "confidence": 0.95,
        "task_version": 1, "created": None, "split": None}
    assert {"maybe a refund?", "too slow", "who are you", "bad correction"}.isdisjoint(rows)
    counts = manifest["counts"]
    assert counts["skipped"] == {"local answer below --min-confidence": 1, "fallback answer": 1,
                                 "local abstention (out of scope)": 1, "feedback: label not in the task": 1}
    assert counts["sources"] == {"feedback": 2, "upstream": 1, "local": 1}
    assert counts["candidates"] == {"feedback": 2, "upstream": 2, "local": 4}
    assert counts["duplicates"] == 4 and counts["overridden"] == 4  # refund (local, three times) and cancel (upstream) overruled
    assert counts["conflicts"] == 0 and counts["read"] == {"calls": 12, "data": 0}
    assert sum(n["train"] + n["validation"] + n["test"] for n in counts["labels"].values()) == counts["rows"] == 4
    # a lower bar lets the unsure local answer in
    _, lowered = _build(task_file, db, tmp_path / "out", selection=Selection(min_confidence=0.5))
    assert lowered["counts"]["rows"] == 5


def test_duplicates_merge_by_normalised_text_and_disagreements_are_conflicts(task_file, tmp_path):
    db = tmp_path / "calls.db"
    _log(db, [
        _call("Where is my ｒｅｆｕｎｄ?", "upstream", answer="refund", age_s=50),
        _call("  where IS my refund? ", "upstream", answer="cancel", age_s=10),   # newer: kept
        _call("where is my refund?", "upstream", answer="refund", age_s=30),
        _call("reset my password", "upstream", answer="login"),
        _call("reset my  password", "upstream", answer="login"),                 # agrees: no conflict
    ])
    version, manifest = _build(task_file, db, tmp_path / "out")
    rows = _rows(version)
    assert len(rows) == 2
    assert rows["  where IS my refund? "]["label"] == "cancel"
    assert manifest["counts"]["conflicts"] == 1 and manifest["counts"]["duplicates"] == 3
    [conflict] = manifest["conflicts"]
    assert conflict["source"] == "upstream" and [a["answer"] for a in conflict["answers"]] == ["cancel", "refund"]
    assert [json.loads(line) for line in (version / "conflicts.jsonl").read_text().splitlines()] == [conflict]


def test_split_is_stable_as_the_log_grows_and_versions_are_kept(task_file, tmp_path):
    db, out = tmp_path / "calls.db", tmp_path / "out"
    _log(db, [_call(f"ticket number {i}", answer="refund") for i in range(300)])
    first, manifest = _build(task_file, db, out)
    before = {text: row["split"] for text, row in _rows(first).items()}
    assert first == out / "v1" and manifest["version"] == 1
    assert all(manifest["counts"]["splits"][split] > 0 for split in ("train", "validation", "test"))
    _log(db, [_call(f"ticket number {i}", answer="login") for i in range(300, 600)])
    second, manifest = _build(task_file, db, out)
    after = {text: row["split"] for text, row in _rows(second).items()}
    assert second == out / "v2" and manifest["version"] == 2 and len(after) == 600
    assert all(after[text] == split for text, split in before.items())
    assert resolve(out) == second and read_manifest(first)["counts"]["rows"] == 300  # v1 is untouched
    assert changed_files(second, manifest) == []
    for name, entry in manifest["files"].items():
        assert entry["rows"] == len((second / name).read_text().splitlines())
    with (second / "train.jsonl").open("a") as handle:
        handle.write('{"text": "smuggled in", "label": "refund"}\n')
    assert changed_files(second, read_manifest(second)) == ["train.jsonl"]
    assert not list(out.glob(".staging-*"))


def test_split_percentages():
    everything_test = SplitPercents(test=100, validation=0)
    assert {everything_test.split_of(normalise(f"t{i}")) for i in range(50)} == {"test"}
    assert {SplitPercents(0, 0).split_of(normalise(f"t{i}")) for i in range(50)} == {"train"}
    with pytest.raises(ValueError):
        SplitPercents(60, 50)


def test_since_and_sources_filter_the_calls(task_file, tmp_path):
    db = tmp_path / "calls.db"
    _log(db, [
        _call("an old one", "upstream", answer="refund", age_s=10 * 86400),
        _call("a new one", "upstream", answer="login", age_s=3600),
        _call("a confident one", answer="cancel", age_s=60),
        _call("a corrected one", answer="cancel", age_s=60),
    ], feedback={3: "refund"})
    _, recent = _build(task_file, db, tmp_path / "out", since=parse_since("7d"))
    assert recent["counts"]["read"]["calls"] == 3 and recent["options"]["since"] is not None
    version, only_feedback = _build(task_file, db, tmp_path / "out", selection=Selection(frozenset({"feedback"})))
    assert list(_rows(version)) == ["a corrected one"]
    assert only_feedback["counts"]["skipped"] == {"source not in --sources": 3}
    version, local = _build(task_file, db, tmp_path / "out", selection=Selection(frozenset({"local"})))
    assert _rows(version)["a corrected one"]["label"] == "cancel"  # its own answer, the correction not asked for
    assert local["options"]["sources"] == ["local"]


def test_parse_since():
    assert parse_since("7d", now=1000.0 + 7 * 86400) == 1000.0
    assert parse_since("2h", now=7200.0) == 0.0
    assert parse_since("2024-05-01T00:00:00+00:00") == 1714521600.0
    assert parse_since("2024-05-01") == parse_since("2024-05-01T00:00")
    with pytest.raises(ValueError, match="ISO date"):
        parse_since("last week")


def test_labelled_data_ranks_between_feedback_and_upstream(task_file, tmp_path):
    db = tmp_path / "calls.db"
    _log(db, [_call("refund please", "upstream", answer="cancel"), _call("log me in", answer="refund")],
         feedback={1: "cancel"})
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in [
        {"text": "Refund please", "label": "refund"},  # beats the upstream answer
        {"text": "log me in", "label": "login"},       # loses to the feedback
        {"text": "only in the data", "label": "login"},
        {"text": "no such label", "label": "shipping"},
    ]))
    version, manifest = _build(task_file, db, tmp_path / "out", data=(str(data),))
    rows = {normalise(text): row for text, row in _rows(version).items()}
    assert rows["refund please"] | {"split": None} == {"text": "Refund please", "label": "refund", "source": "data",
                                                       "call_id": None, "confidence": None, "task_version": None,
                                                       "created": None, "split": None}
    assert rows["log me in"]["label"] == "cancel" and rows["log me in"]["source"] == "feedback"
    assert rows["only in the data"]["source"] == "data"
    assert manifest["counts"]["skipped"] == {"data: label not in the task": 1}
    assert manifest["counts"]["read"] == {"calls": 2, "data": 4}


def test_nothing_usable_says_which_filter_dropped_what(task_file, tmp_path):
    db = tmp_path / "calls.db"
    _log(db, [_call("unsure", answer="refund", confidence=0.2), _call("late", "fallback", answer="refund")])
    with pytest.raises(WorkhorseError, match=r"no usable rows.*below --min-confidence: 1.*fallback answer: 1") as raised:
        _build(task_file, db, tmp_path / "out")
    assert "--min-confidence" in raised.value.hint
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_the_train_file_loads_for_fit_and_eval(task_file, tmp_path):
    db = tmp_path / "calls.db"
    _log(db, [_call(f"please refund order {i}", answer="refund") for i in range(20)]
         + [_call(f"locked out of account {i}", "upstream", answer="login") for i in range(20)])
    version, manifest = _build(task_file, db, tmp_path / "out", percents=SplitPercents(test=0, validation=0))
    dataset = load_file(version / "train.jsonl")
    assert dataset.kind == "classify" and dataset.labels == ["login", "refund"] and len(dataset) == 40
    assert load(str(version / "train.jsonl")).examples == dataset.examples  # what `workhorse fit FILE` calls
    assert dataset.examples[0].text == "please refund order 0" and dataset.examples[0].label == "refund"


def test_extract_rows_carry_the_answer_and_eval_reads_it_as_fields(tmp_path):
    db = tmp_path / "calls.db"
    answer = {"order_id": "00234511", "invoice_id": None}
    with CallLog(db) as log:
        first = wait_committed(log.record(CallRecord(task="ticket-entities", model="m", input="cancel order 00234511",
                                                     source="upstream", upstream_answer=answer, final_answer=answer)))
        second = wait_committed(log.record(CallRecord(task="ticket-entities", model="m", input="hello", source="local",
                                                      output={"order_id": "1"}, confidence=0.3)))
        wait_committed(log.feedback(second, {"fields": {"order_id": None}}))
        wait_committed(log.record(CallRecord(task="ticket-entities", model="m", input="bad", source="local",
                                             output="not an object", confidence=0.99)))
    spec, _ = load_task("ticket-entities")
    with CallLog.open_readonly(db) as log:
        built = build_dataset(spec, tmp_path / "out", BuildOptions(percents=SplitPercents(0, 0)), log)
    rows = [json.loads(line) for line in (built.directory / "train.jsonl").read_text().splitlines()]
    assert [(r["text"], r["answer"], r["source"], r["call_id"]) for r in rows] == [
        ("cancel order 00234511", answer, "upstream", first), ("hello", {"order_id": None}, "feedback", second)]
    assert built.manifest["counts"]["skipped"] == {"local: answer not a JSON object": 1}
    dataset = load_file(built.directory / "train.jsonl")
    assert dataset.kind == "extract" and dataset.examples[0].fields == answer


# -- the command line, as a real process --------------------------------------------------------


def _workhorse(*args: str, home: Path) -> subprocess.CompletedProcess:
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = os.environ | {"WORKHORSE_HOME": str(home), "WORKHORSE_CALL_LOG": str(home / "calls.db"), "COLUMNS": "160",
                        "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "workhorse.cli", *args], capture_output=True, text=True, env=env, timeout=120)


def test_cli_build_and_show(task_file, tmp_path):
    _log(tmp_path / "calls.db", [
        _call("refund me", "upstream", answer="refund", age_s=20),
        _call("Refund  me", "upstream", answer="cancel"),
        _call("sign me in", answer="login"),
    ])
    out = tmp_path / "data"
    built = _workhorse("dataset", "build", str(task_file), "-o", str(out), "--json", home=tmp_path)
    assert built.returncode == 0, built.stderr
    manifest = json.loads(built.stdout)  # the whole of stdout is one document
    assert manifest["directory"] == str(out / "v1") and manifest["counts"]["conflicts"] == 1
    human = _workhorse("dataset", "build", str(task_file), "-o", str(out), "--sources", "upstream", home=tmp_path)
    assert human.returncode == 0, human.stderr
    assert "conflicts" in human.stdout and f"wrote {out / 'v2'}" in human.stdout.replace("\n", "")
    shown = _workhorse("dataset", "show", str(out), "--json", home=tmp_path)
    assert json.loads(shown.stdout)["version"] == 2 and json.loads(shown.stdout)["changed_files"] == []
    first = _workhorse("dataset", "show", str(out / "v1"), home=tmp_path)
    assert first.returncode == 0 and "v1" in first.stdout and "upstream" in first.stdout and "login" in first.stdout


def test_cli_errors(task_file, tmp_path):
    _log(tmp_path / "calls.db", [_call("unsure", answer="refund", confidence=0.1)])
    empty = _workhorse("dataset", "build", str(task_file), "-o", str(tmp_path / "d"), "--json", home=tmp_path)
    assert empty.returncode == 2 and empty.stdout == ""
    assert "error: no usable rows" in empty.stderr and "hint:" in empty.stderr
    unknown = _workhorse("dataset", "build", "no-such-task", "-o", str(tmp_path / "d"), home=tmp_path)
    assert unknown.returncode == 2 and "error: unknown task 'no-such-task'" in unknown.stderr
    (tmp_path / "junk.db").write_bytes(b"not a database at all" * 100)
    junk = _workhorse("dataset", "build", str(task_file), "-o", str(tmp_path / "d"), "--db", str(tmp_path / "junk.db"),
                      home=tmp_path)
    assert junk.returncode == 2 and "error:" in junk.stderr and "call log" in junk.stderr
    bad_sources = _workhorse("dataset", "build", str(task_file), "-o", str(tmp_path / "d"), "--sources", "local,gossip",
                             home=tmp_path)
    assert bad_sources.returncode == 2 and "--sources" in bad_sources.stderr
    nothing = _workhorse("dataset", "show", str(tmp_path / "nowhere"), home=tmp_path)
    assert nothing.returncode == 2 and "error: no dataset at" in nothing.stderr
