"""Joining templates of one event: value phrases, siblings, and what must stay apart."""

from __future__ import annotations

import pytest

from workhorse.logparse.cache import TemplateCache
from workhorse.logparse.parser import LogParser
from workhorse.logparse.refine import merge_phrases
from workhorse.logparse.template import Template, keep_words_in_wildcard_runs

CLOSES = [
    "proxy.example.org:5070 close, 0 bytes sent, 0 bytes received, lifetime 00:01",
    "proxy.example.org:5070 close, 403 bytes sent, 426 bytes received, lifetime <1 sec",
    "proxy.example.org:5070 close, 451 bytes sent, 18846 bytes (18.4 KB) received, lifetime <1 sec",
    "proxy.example.org:5070 close, 1190 bytes (1.16 KB) sent, 1671 bytes (1.63 KB) received, lifetime 00:02",
]


def test_values_whose_shape_varies_become_one_value_phrase():
    """Without a model each line gets its certain variables; the four shapes of one event end as
    one template whose wildcards span spaces, and every line of it resolves there."""
    parser = LogParser(None, TemplateCache(), None)
    parsed = [parser.parse_line(line) for line in CLOSES]
    templates = {parser.cache.resolve(p.template_id).text for p in parsed}
    assert templates == {"<*> close, <*> sent, <*> received, lifetime <*>"}
    later = parser.parse_line("proxy.example.org:5070 close, 2 bytes sent, 99 MB (1.1 GB) received, lifetime 01:02:03")
    assert later.source == "cache"
    assert later.params == ["proxy.example.org:5070", "2 bytes", "99 MB (1.1 GB)", "01:02:03"]


@pytest.mark.parametrize("first, second", [
    ("Failed password for root from 10.0.0.1 port 22 ssh2", "Failed password for invalid user bob from 10.0.0.1 port 22 ssh2"),
    ("session opened for user root by (uid=0)", "session opened for user root by LOGIN(uid=0)"),
    ("a.example.org:80 error : Could not connect to proxy p.example.org:5070 - Could not resolve p.example.org error 11001",
     "a.example.org:80 error : Could not connect to proxy p.example.org:5070 - connection attempt failed with error 10061"),
    ("Connection closed by 10.0.0.1 port 22", "Connection closed by 10.0.0.1 port 22 [preauth]"),
    ("Failed password for invalid user bob from 10.0.0.1 port 22 ssh2", "Failed none for invalid user bob from 10.0.0.1 port 22 ssh2"),
])
def test_different_events_are_not_value_phrases(first, second):
    parser = LogParser(None, TemplateCache(), None)
    one, two = parser.parse_line(first), parser.parse_line(second)
    assert parser.cache.resolve(one.template_id) is not parser.cache.resolve(two.template_id)
    assert len(parser.cache) == 2


def test_a_unit_on_one_side_only_joins_but_a_word_needs_a_value_before_it():
    old = Template("<*> close, <*> sent, <*> received, lifetime <*>", example="h:1 close, 1 bytes sent, 2 bytes received, lifetime 00:01",
                   spanning=frozenset({1, 2}))
    new = Template("<*> close, <*> sent, <*> received, lifetime <*> sec", example="h:1 close, 1 bytes sent, 2 bytes received, lifetime 1 sec")
    joined = merge_phrases(new, old)
    assert joined is not None and joined.text == old.text and joined.match(new.example) == ["h:1", "1 bytes", "2 bytes", "1 sec"]
    # three shared words are needed to call two templates one event
    assert merge_phrases(Template("took <*> ms", example="took 3 ms"), Template("took <*>", example="took 3")) is None


def test_value_phrases_survive_the_cache_file(tmp_path):
    parser = LogParser(None, TemplateCache(), None)
    for line in CLOSES:
        parser.parse_line(line)
    path = tmp_path / "templates.json"
    parser.cache.save(path)
    loaded = TemplateCache.load(path)
    found = loaded.match("h.example.org:1 close, 5 bytes (5 B) sent, 6 bytes received, lifetime <1 sec")
    assert found is not None and found[1][1:] == ["5 bytes (5 B)", "6 bytes", "<1 sec"]


def test_plain_words_in_a_long_run_of_wildcards_are_taken_back():
    line = "a.example.org:80 error : Could not connect to proxy p.example.org:5070 - Could not resolve p.example.org error 11001"
    runaway = "<*> error : Could not connect to proxy <*> <*> <*> <*> <*> <*> <*> <*>"
    assert keep_words_in_wildcard_runs(runaway, line) == "<*> error : Could not connect to proxy <*> - Could not resolve <*> error <*>"
    assert keep_words_in_wildcard_runs("timeout of <*> <*>", "timeout of 10000ms exceeded") == "timeout of <*> exceeded"
    # one wildcard alone is left as the model wrote it
    assert keep_words_in_wildcard_runs("user <*> logged in", "user bob logged in") == "user <*> logged in"


def test_the_joining_thresholds_are_parameters():
    from workhorse.logparse.refine import Joining

    lines = ["Invalid user admin from 1.2.3.4", "Invalid user test from 5.6.7.8"]
    default = LogParser(None, TemplateCache(), None)
    eager = LogParser(None, TemplateCache(), None, joining=Joining(siblings=2))
    for line in lines:
        default.parse_line(line)
        eager.parse_line(line)
    assert len(default.cache) == 2 and [t.text for t in eager.cache] == ["Invalid user <*> from <*>"]


_JOB = "{}: scheduler told me to run this job; however, the start time isn't for {} seconds. Ignoring."


def test_a_dotted_name_that_varies_between_siblings_becomes_a_value_with_its_shared_prefix():
    """Line by line, a job's name is kept as a word (it is not a certain variable); once three
    jobs were seen in that place, the part of the name after the prefix they share is a value,
    names in capitals included, and later jobs are parsed by the cache."""
    parser = LogParser(None, TemplateCache(), None)
    for name, seconds in (("com.apple.icloud.fmfd.heartbeat", 439034), ("com.apple.Safari.SafeBrowsing.Update", 2450),
                          ("com.apple.CacheDelete.daily", 77)):
        parser.parse_line(_JOB.format(name, seconds))
    assert [t.text for t in parser.cache] == [_JOB.format("com.apple.<*>", "<*>")]
    later = parser.parse_line(_JOB.format("com.apple.suggestions.harvest", 12))
    assert later.source == "cache" and later.params == ["suggestions.harvest", "12"]


def test_two_dotted_names_are_still_two_events_and_a_single_name_never_joins():
    parser = LogParser(None, TemplateCache(), None)
    for name in ("com.apple.icloud.fmfd.heartbeat", "com.apple.CacheDelete.daily"):
        parser.parse_line(_JOB.format(name, 5))
    assert len(parser.cache) == 2  # two may be two events
    names = LogParser(None, TemplateCache(), None)
    for name in ("HTTPS", "SOCKS5", "FTP"):
        names.parse_line(f"proxy.example.org:80 open through proxy proxy.example.org:5070 {name}")
    assert len(names.cache) == 3
