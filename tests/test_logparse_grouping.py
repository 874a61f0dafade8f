"""Unseen lines grouped by structure, values learnt from what varies across lines, and the parser's
block path (one template per group) — without a model and with the tiny one."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from workhorse.evals.dpkg_log import LOG_FORMAT, generate
from workhorse.logparse.cache import TemplateCache
from workhorse.logparse.grouping import Evidence, group_lines
from workhorse.logparse.header import LogFormat
from workhorse.logparse.parser import LogParser
from workhorse.logparse.template import Template, keep_bracketed_words, keep_words_in_wildcard_runs, template_from_choices


def _template(group) -> str:
    chunks = group.chunks(group.representative)
    return template_from_choices(chunks, [c.variable for c in chunks])


PACKAGES = [f"{name}:{arch}" for name, arch in zip(
    ["libc6", "tzdata", "libsystemd0", "openssl", "curl", "libcurl4", "python3-yaml", "google-cloud-cli-kpt", "bash",
     "dpkg", "apt", "udev", "libssl3", "libpam0g", "sudo", "vim-tiny", "less", "gzip", "tar", "zstd"],
    ["amd64", "all", "amd64", "amd64", "amd64", "amd64", "all", "amd64", "amd64", "amd64", "amd64", "amd64", "amd64",
     "amd64", "amd64", "amd64", "amd64", "amd64", "amd64", "i386"], strict=True)]
VERSIONS = ["2.36-9+deb12u7", "2024a-0+deb12u1", "252.39-1~deb12u1", "3.0.13-1~deb12u1", "7.88.1-10+deb12u5", "1:2.38.1-5+deb12u1"]


def test_event_words_split_a_group_and_names_and_versions_are_values():
    """Eight states over many lines are the event's words; twenty packages and their versions are
    values, `name:arch` as a whole and a version with its suffix as a whole."""
    states = ["installed", "half-configured", "unpacked", "half-installed"]
    lines = [f"status {state} {package} {VERSIONS[i % len(VERSIONS)]}"
             for i, package in enumerate(PACKAGES) for state in states]
    groups = group_lines(lines)
    assert sorted(_template(g) for g in groups) == sorted(f"status {state} <*> <*>" for state in states)
    assert all(len(g.lines) == len(PACKAGES) for g in groups)


def test_a_version_with_a_suffix_is_one_value_even_in_a_few_lines():
    groups = group_lines(["unpacked libc6 2.36-9+deb12u7", "unpacked libc6 252.39-1~deb12u1"])
    assert [_template(g) for g in groups] == ["unpacked libc6 <*>"]


def test_words_in_a_handful_of_lines_are_left_to_the_model():
    """Three different words in three lines may be three events (`cupsd startup|shutdown|restart`)."""
    groups = group_lines(["cupsd startup succeeded", "cupsd shutdown succeeded", "cupsd restart succeeded"])
    assert sorted(_template(g) for g in groups) == ["cupsd restart succeeded", "cupsd shutdown succeeded", "cupsd startup succeeded"]
    # five different ones that never repeat are names
    users = ["alice", "bob", "carol", "dave", "erin"]
    groups = group_lines([f"Invalid user {u} from 10.0.0.{i}" for i, u in enumerate(users)])
    assert [_template(g) for g in groups] == ["Invalid user <*> from <*>"]


def test_a_name_that_repeats_is_a_value_once_it_has_many_different_values():
    lines = Counter({f"install {package} <none> 1.0-1": 5 for package in PACKAGES})  # each seen five times
    assert [_template(g) for g in group_lines(lines)] == ["install <*> <none> <*>"]
    few = Counter({f"install {package} <none> 1.0-1": 5 for package in PACKAGES[:6]})
    assert len(group_lines(few)) == 6  # six names seen thirty times: no evidence yet
    assert len(group_lines(few, evidence=Evidence(open_distinct=6))) == 1  # the threshold is a parameter


def test_names_in_capitals_and_wrapping_punctuation_and_keys_stay():
    groups = group_lines(["session opened for user root by (uid=0)", "session opened for user bob by LOGIN(uid=0)"])
    assert len(groups) == 2  # `LOGIN(…)` differs by a name: another event, although both hold a number
    users = ["alice", "bob", "carol", "dave", "erin", "frank"]
    groups = group_lines([f"login [{u}] user={u} ok" for u in users])
    assert [_template(g) for g in groups] == ["login [<*>] user=<*> ok"]


def test_an_empty_value_is_not_the_one_the_template_is_made_from():
    hosts = ["", "a.example.org", "", "b.example.org", "c", "d", ""]
    groups = group_lines([f"connection from 10.0.0.{i} ({h}) at noon" for i, h in enumerate(hosts)],
                         evidence=Evidence(min_distinct=3))
    assert [_template(g) for g in groups] == ["connection from <*> (<*>) at noon"]


def test_words_shown_to_be_values_are_not_taken_back_from_a_run_of_wildcards():
    line = "status installed libc6:amd64 2.36-9"
    assert keep_words_in_wildcard_runs("status installed <*> <*>", line) == "status installed libc6:amd64 <*>"
    assert keep_words_in_wildcard_runs("status installed <*> <*>", line, values={2}) == "status installed <*> <*>"


# -- the parser's block path -------------------------------------------------------------------
def test_a_dpkg_log_parses_to_its_events_with_no_package_name_in_a_template():
    lines, truth = generate(3000, seed=7)
    parser = LogParser(LogFormat.parse(LOG_FORMAT), TemplateCache(), None)
    parsed = list(parser.parse(lines, block=500))
    templates = {parser.cache.resolve(p.template_id).text for p in parsed}
    assert len(templates) <= 20
    names = {m.group(1) for line in lines for m in re.finditer(r"(\S+):(?:amd64|all|i386)\b", line)}
    assert len(names) > 50
    assert not any(name in template.split(" ") or f"{name}:" in template for template in templates for name in names)
    assert not any(f":{arch}" in template for template in templates for arch in ("amd64", "all", "i386"))
    # each true event is one template, and each template one event
    pairs = {(t, parser.cache.resolve(p.template_id).id) for p, t in zip(parsed, truth, strict=True)}
    assert len({t for t, _ in pairs}) == len(pairs) == len({i for _, i in pairs})


def test_line_by_line_a_dpkg_log_splits_by_package():
    """The line-by-line path has no evidence across lines: what the block path is for."""
    lines, _ = generate(600, seed=7)
    parser = LogParser(LogFormat.parse(LOG_FORMAT), TemplateCache(), None)
    list(parser.parse(lines))
    assert len(parser.cache) > 40


def test_a_later_block_generalizes_a_cached_template_and_its_lines_follow():
    parser = LogParser(None, TemplateCache(), None)
    first = parser.parse_block([f"install {p} <none> 1.0-1" for p in PACKAGES[:2]])
    assert parser.cache.resolve(first[0].template_id).text == "install libc6:amd64 <none> <*>"
    later = parser.parse_block([f"install {p} <none> 1.0-1" for p in PACKAGES[2:]])
    template = parser.cache.resolve(later[0].template_id)
    assert template.text == "install <*> <none> <*>"
    assert parser.cache.resolve(first[0].template_id) is template and parser.cache.resolve(first[1].template_id) is template
    assert parser.parse_line("install newpkg:arm64 <none> 9").source == "cache"


def test_block_records_keep_the_input_order_and_sources():
    parser = LogParser(None, TemplateCache(), None)
    parser.parse_block(["job 1 done"])
    out = parser.parse_block(["disk sda full", "job 2 done", "disk sda full", "job 3 done"])
    assert [p.number for p in out] == [2, 3, 4, 5]
    assert [p.source for p in out] == ["learnt", "cache", "cache", "cache"]  # the first line of a new template
    assert [p.params for p in out][1] == ["2"]
    assert parser.cache.hits == 3 and parser.cache.misses == 2  # each line counted once


@pytest.mark.parametrize("block", [1, 3, 100])
def test_every_line_parses_under_its_template_whatever_the_block(block):
    lines, _ = generate(400, seed=3)
    parser = LogParser(LogFormat.parse(LOG_FORMAT), TemplateCache(), None)
    for p in parser.parse(lines, block=block):
        assert Template(parser.cache.resolve(p.template_id).text).match(p.content) is not None, p


def test_with_a_model_one_call_per_group_in_batches(tiny_model):
    """The tiny random model writes some template per group; the parser asks it once per group
    (never per line) and every line still parses under the template it is given."""
    from workhorse.engine import Engine, EngineConfig
    from workhorse.logparse.model import TemplateModel

    engine = Engine(tiny_model, EngineConfig(n_ctx=4096, n_slots=4, prefix_slots=2))
    try:
        model = TemplateModel(engine)
        parser = LogParser(None, TemplateCache(), model, model_below=None)  # every group asked
        lines = [f"status {s} {p} 1.{i}-1" for i, p in enumerate(PACKAGES) for s in ("installed", "unpacked")]
        lines += ["startup archives unpack", "startup packages configure"] * 3
        parsed = parser.parse_block(lines)
        assert model.calls == len(group_lines(list(dict.fromkeys(p.content for p in parsed)))) == 4
        # past the shared prefix each call costs at least its line (with its group's other lines and cached templates)
        shortest = min(len(tiny_model.tokenize(line, add_special=False)) for line in lines)
        assert model.prompt_tokens >= model.calls * shortest > 0
        for p in parsed:
            assert parser.cache.resolve(p.template_id).match(p.content) is not None
    finally:
        engine.close()


def test_a_value_shown_in_one_group_is_a_value_in_the_one_line_of_another():
    """`libc6:amd64` varies among the `status installed` lines; its one `remove` line then has it
    as a value too. A plain word is not carried over: a user named `user` leaves `Invalid user <*>`."""
    parser = LogParser(None, TemplateCache(), None)
    block = [f"status installed {p} 1.{i}-1" for i, p in enumerate(PACKAGES)] + ["remove libc6:amd64 1.0-1 <none>"]
    out = parser.parse_block(block)
    assert parser.cache.resolve(out[-1].template_id).text == "remove <*> <*> <none>"
    users = ["user", "alice", "bob", "carol", "dave", "erin"]
    parser.parse_block([f"Invalid user {u} from 10.0.0.{i}" for i, u in enumerate(users)])
    alone = parser.parse_block(["pam_unix(sshd:auth): check pass; user unknown"])
    assert parser.cache.resolve(alone[0].template_id).text == "pam_unix(sshd:auth): check pass; user unknown"


def test_with_model_below_only_small_groups_are_asked(tiny_model):
    from workhorse.engine import Engine, EngineConfig
    from workhorse.logparse.model import TemplateModel

    engine = Engine(tiny_model, EngineConfig(n_ctx=4096, n_slots=4, prefix_slots=2))
    try:
        model = TemplateModel(engine)
        parser = LogParser(None, TemplateCache(), model, model_below=3)
        lines = [f"status installed {p} 1.{i}-1" for i, p in enumerate(PACKAGES)] + ["startup archives unpack"] * 4
        parsed = parser.parse_block(lines)
        assert model.calls == 1  # the one-line group; twenty lines of `status installed` decided by their evidence
        assert parser.cache.resolve(parsed[0].template_id).text == "status installed <*> <*>"
    finally:
        engine.close()


def test_line_by_line_after_a_block_known_values_are_values():
    parser = LogParser(None, TemplateCache(), None)
    parser.parse_block([f"status installed {p} 1.{i}-1" for i, p in enumerate(PACKAGES)])
    alone = parser.parse_line("purge libc6:amd64 1.0-1 <none>")
    assert parser.cache.resolve(alone.template_id).text == "purge <*> <*> <none>"
    assert parser.cache.resolve(parser.parse_line("purge newpkg:amd64 1.0-1 <none>").template_id).text == "purge <*> <*> <none>"


def test_values_shown_survive_the_cache_file_and_plain_words_are_not_kept(tmp_path):
    parser = LogParser(None, TemplateCache(), None)
    parser.parse_block([f"status installed {p} 1.{i}-1" for i, p in enumerate(PACKAGES)])
    assert "libc6:amd64" in parser.cache.values and "bash:amd64" in parser.cache.values
    assert not parser.cache.remember(["user", ""])  # plain words are not carried over
    parser.cache.save(tmp_path / "templates.json")
    loaded = TemplateCache.load(tmp_path / "templates.json")
    assert loaded.values == parser.cache.values
    again = LogParser(None, loaded, None).parse_line("remove libc6:amd64 1.0-1 <none>")
    assert loaded.resolve(again.template_id).text == "remove <*> <*> <none>"


def test_the_model_is_not_asked_when_it_has_nothing_to_choose(tiny_model):
    from workhorse.engine import Engine, EngineConfig
    from workhorse.logparse.model import TemplateModel

    engine = Engine(tiny_model, EngineConfig(n_ctx=4096, n_slots=2, prefix_slots=2))
    try:
        model = TemplateModel(engine)
        parser = LogParser(None, TemplateCache(), model)
        parser.parse_line("Started 12 /var/lib/x")  # a name, a number and a path: all decided
        parser.parse_block(["Stopped 13 /var/lib/y", "Stopped 14 /var/lib/z"])
        assert model.calls == 0 and len(parser.cache) == 2
        parser.parse_line("job 12 finished")
        assert model.calls == 1
    finally:
        engine.close()


def test_lines_built_to_split_one_at_a_time_cost_a_bounded_time():
    """Line i differs from the others in one word at position i: every split peels off one line."""
    import time

    n = 280
    lines = [" ".join(["go"] + ["x" if p == i else "y" for p in range(n)]) for i in range(n)]
    started = time.perf_counter()
    groups = group_lines(lines)
    assert time.perf_counter() - started < 5
    assert sum(len(g.lines) for g in groups) == n and all(not g.values for g in groups)
    parser = LogParser(None, TemplateCache(), None)
    started = time.perf_counter()
    out = parser.parse_block(lines)
    assert time.perf_counter() - started < 10 and len(out) == n


def test_an_address_and_its_port_are_one_value_or_two_as_the_deployment_says():
    from workhorse.logparse.template import ports_apart

    lines = [f"Accepted socket connection from /10.0.0.{i}:{5000 + i} at {i}" for i in range(6)]
    one = LogParser(None, TemplateCache(), None)
    one.parse_block(lines)
    assert [t.text for t in one.cache] == ["Accepted socket connection from <*> at <*>"]
    two = LogParser(None, TemplateCache(), None, ports="apart")
    parsed = two.parse_block(lines)
    assert [t.text for t in two.cache] == ["Accepted socket connection from <*>:<*> at <*>"]
    assert parsed[2].params == ["/10.0.0.2", "5002", "2"]
    assert ports_apart("to <*> via <*>", "to host-1:80 via a:b c") == ("to <*>:<*> via <*>", frozenset())  # `a:b c` is no port
    # a spanning wildcard after the split keeps its place
    text, spanning = ports_apart("<*> from <*> at <*>", "x from 10.0.0.1:22 at Wed Jul 27 10:59:53 2005", frozenset({2}))
    assert (text, spanning) == ("<*> from <*>:<*> at <*>", frozenset({3}))


def test_logs_parse_takes_the_ports_convention(tmp_path):
    import json as _json

    from typer.testing import CliRunner

    from workhorse.cli import app

    log = tmp_path / "zk.log"
    log.write_text("".join(f"INFO Accepted socket connection from /10.0.0.{i}:{5000 + i}\n" for i in range(5)))
    result = CliRunner().invoke(app, ["logs", "parse", str(log), "--no-model", "--ports", "apart", "--format", "<Level> <Content>"])
    assert result.exit_code == 0, result.output
    records = [_json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert {r["template"] for r in records} == {"Accepted socket connection from <*>:<*>"}
    bad = CliRunner().invoke(app, ["logs", "parse", str(log), "--no-model", "--ports", "sideways"])
    assert bad.exit_code != 0


def test_a_wildcard_the_model_wrote_into_a_bracketed_word_is_taken_back():
    line = "install libc6:amd64 <none> 2.36-9"
    assert Template("install <*> <<*> <*>").match(line) is not None  # it parses the line, with `none>` as a value
    assert keep_bracketed_words("install <*> <<*> <*>", line) == "install <*> <none> <*>"
    assert keep_bracketed_words("install <*> <*> <*>", line) == "install <*> <none> <*>"
    assert keep_bracketed_words("install <*> <*>", line) == "install <*> <*>"  # tokens do not line up: as it was
    assert keep_bracketed_words("status <*>", "status <42>") == "status <*>"  # a number in brackets is a value
