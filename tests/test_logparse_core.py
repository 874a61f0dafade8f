"""Log templates, the template cache, parameter types, the parser with and without the real model,
and `workhorse logs parse`."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from workhorse.cli import app
from workhorse.errors import WorkhorseError
from workhorse.logparse.cache import TemplateCache
from workhorse.logparse.header import LogFormat
from workhorse.logparse.model import shipped_demos, similar
from workhorse.logparse.parser import LogParser
from workhorse.logparse.template import Template, choice_pattern, chunk, normalize, render, template_from_choices
from workhorse.logparse.types import param_type


def _certain(content: str) -> str:
    chunks = chunk(normalize(content))
    return template_from_choices(chunks, [c.variable for c in chunks])


# -- templates ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("content", "template"), [
    ("Received block 42 of size 67108864", "Received block <*> of size <*>"),
    ("mod_jk child init 1 -2", "mod_jk child init <*> <*>"),  # a sign belongs to its number
    ("build a-2 of x (-3)", "build a-<*> of x (<*>)"),  # after a word it is a hyphen; after punctuation a sign
    ("session 0x14ed93111f20005 closed, ok=true", "session <*> closed, ok=<*>"),
    ("Deleting file /mnt/data/current/blk_1", "Deleting file <*>"),  # a path is one value
    ("jk2_init() Found child 6725", "jk2_init() Found child <*>"),  # a call's () stays
    ("ip 10.0.0.1 up", "ip <*> up"),  # an address is one value
    ("v 1.2.3 up", "v <*> up"),  # numbers joined by dots are one value
    ("version ssh2 SOCKS5", "version ssh2 SOCKS5"),  # words with digits are for the model to judge
    ("Resolved node to /default-rack", "Resolved node to <*>"),  # a path of one segment too
    ("Old: msra-sa-41/10.1.2.3:9000 New: msra-sa-41:9000", "Old: <*> New: <*>"),  # a host with its address or port
    ("retry at msra-sa-41:8030. Already", "retry at <*>. Already"),  # a full stop ends the host
    ("ContAlloc:11 memory:1024", "ContAlloc:<*> memory:<*>"),  # counters are not hosts
    ("[instance: b9000564-fe1a-409b-b8cc-1e88b294cd1d] VM Started", "[instance: <*>] VM Started"),  # a UUID
])
def test_certain_variables_follow_the_guidelines(content, template):
    assert _certain(content) == template


def test_render_merges_adjacent_and_joined_wildcards():
    assert render(["<*>", "<*>", ".", "<*>", " a ", "<*>", "-", "<*>", ":", "<*>", " ", "<*>", "/", "<*>"]) == "<*> a <*>:<*> <*>"


def test_choice_pattern_admits_the_line_and_its_templates_only():
    import re

    content = normalize("connection from  10.1.2.3 () at host")
    pattern = re.compile(choice_pattern(chunk(content)))
    assert not pattern.fullmatch(content)  # numbers are always variables
    assert pattern.fullmatch("connection from " + "<*>" * 7 + " () at host")
    assert pattern.fullmatch("connection from " + "<*>" * 7 + " (<*>) at <*>")
    assert pattern.fullmatch("<*> from " + "<*>" * 7 + " () at host")
    assert not pattern.fullmatch("connection from " + "<*>" * 7 + " () at otherhost")  # it cannot rewrite the line
    assert not pattern.fullmatch("connection from " + "<*>" * 7 + " () at host extra")


def test_template_matching_and_generalization():
    template = Template("Invalid user <*> from <*> port <*>")
    assert template.match("Invalid user bob from 1.2.3.4 port 22") == ["bob", "1.2.3.4", "22"]
    assert template.match("Invalid user  bob from") is None
    assert template.match("Invalid user bob smith from 1.2.3.4 port 22") is None  # a wildcard spans no space
    assert Template("(<*>)").match("()") == [""]
    assert template.generalizes(Template("Invalid user admin from <*> port <*>"))
    assert not Template("Invalid user admin from <*> port <*>").generalizes(template)


def test_shipped_demos_are_templates_of_their_own_lines():
    demos = shipped_demos()
    assert len(demos) >= 10
    for demo in demos:
        assert Template(demo.template).match(normalize(demo.log)) is not None, demo


def test_similar_finds_templates_sharing_words():
    cache = TemplateCache()
    cache.add("Invalid user <*> from <*>", "Invalid user bob from 1.2.3.4")
    cache.add("Connection closed by <*>", "Connection closed by 1.2.3.4")
    assert [t.text for t in similar("Invalid user alice from 9.9.9.9", list(cache))][0] == "Invalid user <*> from <*>"


# -- cache -------------------------------------------------------------------------------------
def test_the_most_specific_template_wins_and_generalizations_alias():
    cache = TemplateCache()
    narrow = cache.add("Invalid user admin from <*>", "Invalid user admin from 1.1.1.1")
    assert cache.match("Invalid user admin from 2.2.2.2")[0] is narrow
    broad = cache.add("Invalid user <*> from <*>", "Invalid user bob from 3.3.3.3")
    assert len(cache) == 1 and cache.resolve(narrow.id) is broad  # the narrow one is replaced
    specific = cache.add("Invalid user <*> from 10.0.0.1", "Invalid user x from 10.0.0.1")
    assert specific is broad  # already covered: not added
    template, params = cache.match("Invalid user eve from 4.4.4.4")
    assert template is broad and params == ["eve", "4.4.4.4"]
    assert cache.hits == 2


def test_a_cache_survives_a_round_trip_and_a_broken_file_says_what_to_do(tmp_path):
    cache = TemplateCache()
    first = cache.add("Disk <*> is full", "Disk sda is full")
    cache.add("Disk <*> is <*>", "Disk sdb is slow")
    path = tmp_path / "templates.json"
    cache.save(path)
    loaded = TemplateCache.load(path)
    assert [t.text for t in loaded] == ["Disk <*> is <*>"] and loaded.resolve(first.id).text == "Disk <*> is <*>"
    path.write_text("{not json")
    with pytest.raises(WorkhorseError, match="unreadable"):
        TemplateCache.load(path)


def test_lines_differing_in_one_kept_word_merge_once_three_words_were_seen():
    """Without a model, unseen lines get their certain variables; lines of one event then differ
    in one word, and the third different word there joins all three."""
    parser = LogParser(None, TemplateCache(), None)
    first = parser.parse_line("Invalid user admin from 1.2.3.4")
    second = parser.parse_line("Invalid user test from 5.6.7.8")
    cache = parser.cache
    assert cache.resolve(first.template_id) is not cache.resolve(second.template_id)  # two words may be two events
    third = parser.parse_line("Invalid user guest from 9.9.9.9")
    assert {cache.resolve(p.template_id).text for p in (first, second, third)} == {"Invalid user <*> from <*>"}
    assert parser.parse_line("Invalid user oracle from 9.9.9.9").source == "cache"
    # one differing word at the start is a different event
    parser.parse_line("Accepted user admin from 1.2.3.4")
    assert len(cache) == 2
    # two shared words are too few to tell a value from a different event
    for verb in ("startup", "shutdown", "restart"):
        parser.parse_line(f"cupsd {verb} succeeded")
    assert len(cache) == 5


def test_records_carry_header_fields_and_typed_parameters():
    log_format = LogFormat.parse("<Date> <Time> <Level> <Component>: <Content>")
    cache = TemplateCache()
    cache.add("Accepted <*> in <*> from <*>", "Accepted 10.0.0.1:1 in 1ms from http://x.org")
    parser = LogParser(log_format, cache, None)
    parsed = parser.parse_line("2024-05-01 10:00:01 INFO net.Server: Accepted 10.0.0.7:5050 in 35ms from https://a.example.org/x")
    record = parsed.record(parser.cache)
    assert record["header"] == {"Date": "2024-05-01", "Time": "10:00:01", "Level": "INFO", "Component": "net.Server"}
    assert [p["type"] for p in record["params"]] == ["ip_port", "duration", "url"]
    unfit = parser.parse_line("a line without the header")
    assert unfit.fits_format is False and parser.unfit == 1


@pytest.mark.parametrize(("value", "kind"), [
    ("10.0.0.1", "ip"), ("/10.0.0.1:50010", "ip_port"), ("fe80::1", "ip"), ("42", "number"), ("-3.5", "number"),
    ("0x1f", "hex"), ("35ms", "duration"), ("1.5 KB", "size"), ("/var/log/x.log", "path"), ("true", "bool"),
    ("a@b.org", "email"), ("blk_123", "id"), ("proxy.example.org", "hostname"), ("bob", "word"), ("", "empty"),
    ("3f2a1b4c-0000-4c55-9d1e-55a0c6e2f1aa", "uuid"), ("12:30:01", "time"), ("2024-01-02", "date"),
])
def test_parameter_types(value, kind):
    assert param_type(value) == kind


# -- with the real model -----------------------------------------------------------------------
@pytest.mark.real_model
def test_the_model_writes_templates_that_parse_their_lines(real_model_path):
    from workhorse.engine import Engine, EngineConfig, LlamaModel
    from workhorse.logparse.model import TemplateModel

    model = LlamaModel(real_model_path("qwen2.5-coder-0.5b"), name="qwen2.5-coder-0.5b")
    engine = Engine(model, EngineConfig(n_ctx=2048, n_slots=2, prefix_slots=2))
    try:
        parser = LogParser(None, TemplateCache(), TemplateModel(engine))
        lines = [
            "Connection closed by 212.47.254.145 port 41222 [preauth]",
            "Connection closed by 10.1.2.3 port 50011 [preauth]",
            "Scheduled job nightly-backup finished in 35 s with status 0",
            "Connection closed by 192.168.0.9 port 1022 [preauth]",
            "Scheduled job nightly-backup finished in 12 s with status 1",
        ]
        parsed = [parser.parse_line(line) for line in lines]
        for line, result in zip(lines, parsed, strict=True):
            template = parser.cache.resolve(result.template_id)
            assert template.match(normalize(line)) is not None, (line, template.text)
            assert "<*>" in template.text  # its numbers at least are variables
        assert parsed[1].source == parsed[3].source == "cache"
        assert parser.model_calls <= 3
    finally:
        engine.close()


# -- command line ------------------------------------------------------------------------------
def test_logs_parse_writes_one_record_per_line_and_keeps_its_cache(tmp_path):
    log = tmp_path / "app.log"
    log.write_text("\n".join([
        "2024-05-01 10:00:01 INFO Server: Accepted 10.0.0.7:5050",
        "2024-05-01 10:00:02 INFO Server: Accepted 10.0.0.8:5051",
        "2024-05-01 10:00:03 WARN Disk: Disk sda is 91% full",
        "no header here",
    ]) + "\n")
    result = CliRunner().invoke(app, ["logs", "parse", str(log), "--no-model", "-o", str(tmp_path / "out.jsonl"),
                                      "--format", "<Date> <Time> <Level> <Component>: <Content>"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["line"] for r in records] == [1, 2, 3, 4]
    assert records[0]["template"] == records[1]["template"] == "Accepted <*>"
    assert records[1]["source"] == "cache" and records[3]["fits_format"] is False
    assert records[2]["header"]["Level"] == "WARN"
    again = CliRunner().invoke(app, ["logs", "parse", str(log), "--no-model", "--format", "<Date> <Time> <Level> <Component>: <Content>"])
    assert again.exit_code == 0
    assert all(json.loads(line)["source"] == "cache" for line in again.stdout.splitlines() if line.startswith("{"))


def test_logs_parse_detects_a_header_and_refuses_bad_input(tmp_path):
    log = tmp_path / "app.log"
    log.write_text("".join(f"2024-05-01 10:00:{i:02d} INFO [main] Worker: job {i} done\n" for i in range(30)))
    result = CliRunner().invoke(app, ["logs", "parse", str(log), "--no-model"])
    assert result.exit_code == 0, result.output
    first = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("{")))
    assert first["content"] == "job 0 done" and first["template"] == "job <*> done"
    missing = CliRunner().invoke(app, ["logs", "parse", str(tmp_path / "none.log")])
    assert missing.exit_code != 0
    follow_stdin = CliRunner().invoke(app, ["logs", "parse", "-", "--follow"], input="x\n")
    assert follow_stdin.exit_code != 0


def _loghub_dir(tmp_path):
    """One system, Loghub's layout: raw lines, the structured CSV with true templates, the formats file."""
    import csv

    root = tmp_path / "logs"
    (root / "Mini").mkdir(parents=True)
    (root / "log_formats.json").write_text(json.dumps({"Mini": {"log_file": "Mini/Mini_2k.log", "log_format": "<Level> <Content>"}}))
    rows = [("INFO", f"Job {i} finished in {i + 3} s", "Job <*> finished in <*> s") for i in range(4)]
    rows += [("WARN", f"Disk {d} is full", "Disk <*> is full") for d in ("sda", "sdb")]
    (root / "Mini" / "Mini_2k.log").write_text("".join(f"{level} {content}\n" for level, content, _ in rows))
    with open(root / "Mini" / "Mini_2k.log_structured_corrected.csv", "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["LineId", "Level", "Content", "EventId", "EventTemplate"])
        for i, (level, content, template) in enumerate(rows, start=1):
            writer.writerow([i, level, content, "E1" if template.startswith("Job") else "E2", template])
    return root


@pytest.mark.real_model
def test_eval_and_bench_of_a_logs_task_report_the_loghub_measures(tmp_path, real_model_path, monkeypatch):
    from workhorse.bench.logs_bench import run
    from workhorse.engine import Engine, EngineConfig, LlamaModel
    from workhorse.logparse.model import TemplateModel

    root = _loghub_dir(tmp_path)
    engine = Engine(LlamaModel(real_model_path("qwen2.5-coder-0.5b")), EngineConfig(n_ctx=4096, n_slots=2, prefix_slots=2))
    try:
        report = run(root, TemplateModel(engine), repeats=1)
    finally:
        engine.close()
    mini = report["systems"]["Mini"]
    assert mini["lines"] == 6 and mini["true_templates"] == 2
    assert 1 <= mini["model_calls"] <= 6
    for key in ("GA", "PA", "FGA", "FTA"):
        assert 0.0 <= mini[key] <= 1.0 and key in report["average"] and key in report["average"]["drain3"]
    assert mini["lines_per_s_warm"] > 0 and report["average"]["model_calls"] == mini["model_calls"]


def test_eval_of_a_logs_task_wants_dir_and_system():
    result = CliRunner().invoke(app, ["eval", "log-templates", "HDFS"])
    assert result.exit_code != 0 and "DIR:SYSTEM" in str(result.exception)


def test_a_timestamp_is_one_value_and_its_wildcard_spans_spaces():
    assert _certain("connection from 10.0.0.1 () at Wed Jul 27 10:59:53 2005") == "connection from <*> () at <*>"
    assert _certain("job 1 failed") == "job <*> failed"
    cache = TemplateCache()
    cache.add("connection from <*> (<*>) at <*>", "connection from 10.0.0.1 () at Wed Jul 27 10:59:53 2005")
    _, params = cache.match("connection from 10.0.0.2 (host.example.org) at Thu Jul 28 01:02:03 2005")
    assert params == ["10.0.0.2", "host.example.org", "Thu Jul 28 01:02:03 2005"]


def test_words_with_long_digit_runs_are_ids():
    assert _certain("Task attempt_1445144423722_0020_m_000000_0 done by ssh2") == "Task <*> done by ssh2"


def test_host_names_are_values_and_package_names_are_not():
    assert _certain("Opening proxy : proxy.cse.example.hk:5070") == "Opening proxy : <*>"
    assert _certain("Receiving block from /10.251.202.181:47130 and /10.0.0.1") == "Receiving block from <*> and <*>"
    assert _certain("Caught java.net.ConnectException here") == "Caught java.net.ConnectException here"


def test_words_in_capitals_are_never_wildcards():
    import re

    chunks = chunk("proxy 10.0.0.1:80 HTTPS")
    pattern = re.compile(choice_pattern(chunks))
    assert pattern.fullmatch("proxy " + "<*>" * 9 + " HTTPS") and not pattern.fullmatch("proxy " + "<*>" * 9 + " <*>")


def test_templates_differing_in_a_word_in_capitals_do_not_merge():
    parser = LogParser(None, TemplateCache(), None)
    parser.parse_line("chrome.exe open through proxy 10.0.0.1:80 HTTPS")
    parser.parse_line("chrome.exe open through proxy 10.0.0.1:80 SOCKS5")
    assert sorted(t.text for t in parser.cache) == ["chrome.exe open through proxy <*> HTTPS", "chrome.exe open through proxy <*> SOCKS5"]


def test_capitalised_and_camel_case_words_are_names():
    chunks = chunk("Got exception in getResources for EventType")
    assert [c.text for c in chunks if c.constant] == ["Got", "getResources", "EventType"]


def test_punctuation_standing_alone_or_around_a_value_stays():
    import re

    pattern = re.compile(choice_pattern(chunk("size = 3, to - a [DFSClient_1234_5] 10.0.0.1:50010:Got it")))
    address = "<*>" * 9  # the model writes one wildcard per chunk; `render` joins them
    assert pattern.fullmatch(f"size = <*>, to - a [<*>] {address}:Got it")
    for wrong in (f"size <*> <*>, to - a [<*>] {address}:Got it", f"size = <*>, to <*> a [<*>] {address}:Got it",
                  f"size = <*>, to - a <*><*>] {address}:Got it", f"size = <*>, to - a [<*>] {address}<*>Got it"):
        assert not pattern.fullmatch(wrong), wrong


def test_punctuation_that_ends_a_certain_value_stays():
    import re

    pattern = re.compile(choice_pattern(chunk("disconnect from 10.0.0.1: 11: Bye [10.0.0.2]")))
    assert pattern.fullmatch("disconnect from " + "<*>" * 7 + ": <*>: Bye [" + "<*>" * 7 + "]")
    assert not pattern.fullmatch("disconnect from " + "<*>" * 8 + " <*>: Bye [" + "<*>" * 7 + "]")
