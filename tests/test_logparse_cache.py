"""The template cache: its bound and what goes past it, its file written durably, and a broken file
refused with a message that names it and says what to do."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from workhorse.errors import WorkhorseError
from workhorse.logparse.cache import MAX_TEMPLATES, TemplateCache
from workhorse.logparse.parser import LogParser


def _three(cache: TemplateCache) -> list[int]:
    return [cache.add(f"{word} <*> done", f"{word} 1 done").id for word in ("alpha", "beta", "gamma")]


# -- the bound -----------------------------------------------------------------------------------
def test_past_the_bound_the_least_recently_matched_template_goes():
    cache = TemplateCache(max_templates=3)
    alpha, beta, gamma = _three(cache)
    assert cache.match("alpha 2 done") is not None  # alpha is now the most recently matched; beta the least
    delta = cache.add("delta <*> done", "delta 1 done").id
    assert sorted(t.id for t in cache) == sorted([alpha, gamma, delta]) and cache.evicted == 1
    assert cache.get(beta) is None and cache.match("beta 2 done") is None
    with pytest.raises(KeyError):
        cache.resolve(beta)
    cache.add("epsilon <*> done", "epsilon 1 done")  # never matched since it was added: gamma goes
    assert cache.get(gamma) is None and cache.get(alpha) is not None
    assert MAX_TEMPLATES >= 1_000  # the default leaves room for a large system's templates


def test_aliases_of_an_evicted_template_go_with_it():
    cache = TemplateCache(max_templates=2)
    narrow = cache.add("Invalid user admin from <*>", "Invalid user admin from 1.1.1.1").id
    broad = cache.add("Invalid user <*> from <*>", "Invalid user bob from 2.2.2.2").id
    assert cache.resolve(narrow).id == broad
    cache.add("Accepted <*> for <*>", "Accepted password for bob")
    cache.add("Closed <*>", "Closed 1")  # the generalization is now the least recently used
    assert cache.get(narrow) is None and cache.get(broad) is None and not cache._alias


def test_a_line_parsed_under_a_template_evicted_since_keeps_it_in_its_record():
    parser = LogParser(None, TemplateCache(max_templates=1), None)
    first = parser.parse_line("disk sda is full")
    parser.parse_line("job 1 started at noon")
    assert parser.cache.get(first.template_id) is None
    assert first.record(parser.cache)["template"] == "disk sda is full"


def test_the_recency_order_survives_the_file(tmp_path: Path):
    cache = TemplateCache()
    alpha, beta, _gamma = _three(cache)
    cache.match("alpha 3 done")
    cache.match("beta 3 done")
    path = tmp_path / "templates.json"
    cache.save(path)
    loaded = TemplateCache.load(path, max_templates=2)  # gamma was used least recently
    assert sorted(t.id for t in loaded) == sorted([alpha, beta])
    assert [t.text for t in loaded] == ["alpha <*> done", "beta <*> done"]  # the order they were added in


def test_a_tie_goes_to_the_template_of_the_lines_first_word():
    """Equal literal text: the one indexed by the line's first word wins, whatever the hash seed."""
    cache = TemplateCache()
    wildcard_first = cache.add("<*> b c", "x b c")
    word_first = cache.add("a <*> c", "a y c")
    assert wildcard_first.literal_chars == word_first.literal_chars
    assert cache.match("a b c")[0] is word_first


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_the_template_with_the_most_literal_text_wins_whichever_was_added_first(order):
    """Two templates of one index list that both parse a line and neither covers the other: the
    one that keeps more of the line wins, whichever came first (`match` stops at its first find)."""
    texts = ["a <*> c-<*> e", "a b <*>-d e"]
    cache = TemplateCache()
    added = [cache.add(texts[i], "a b c-d e".replace("b", "z") if i == 0 else "a b q-d e") for i in order]
    less, more = sorted(added, key=lambda t: t.literal_chars)
    assert less.literal_chars < more.literal_chars and len(cache) == 2
    assert cache.match("a b c-d e") == (more, ["c"])
    assert cache.match("a z c-y e")[0] is less  # the other still parses what only it parses


def test_a_template_whose_first_or_last_word_runs_into_a_wildcard_is_found():
    """`blk_<*>` starts lines whose first word is `blk_1`, `blk_2`…: such a template is indexed as
    starting (or ending) with a variable, not under `blk_`, which no line starts with."""
    cache = TemplateCache()
    starts = cache.add("blk_<*> is done", "blk_1 is done")
    ends = cache.add("served <*> in <*>ms", "served 3 in 12ms")
    assert cache.match("blk_42 is done") == (starts, ["42"])
    assert cache.match("served 4 in 9ms") == (ends, ["4", "9"])


def test_a_line_is_tried_only_against_templates_of_its_spaces_unless_a_wildcard_spans_them():
    cache = TemplateCache()
    fixed = cache.add("job <*> done", "job 1 done")
    spanning = cache.add("job <*> failed", "job at Wed Jul 27 failed")  # its example's value has spaces
    assert fixed.spaces == 2 and spanning.spaces is None
    assert cache.match("job 7 done") == (fixed, ["7"])
    assert cache.match("job 7 8 done") is None
    assert cache.match("job at Thu Jul 28 failed") == (spanning, ["at Thu Jul 28"])


def test_a_generalized_template_leaves_the_index_with_the_one_it_replaced():
    cache = TemplateCache()
    narrow = cache.add("Invalid user admin from <*>", "Invalid user admin from 1.2.3.4")
    broad = cache.add("Invalid user <*> from <*>", "Invalid user bob from 1.2.3.4")
    assert cache.resolve(narrow.id) is broad and len(cache) == 1
    assert cache.match("Invalid user admin from 5.6.7.8") == (broad, ["admin", "5.6.7.8"])


# -- the file --------------------------------------------------------------------------------------
def test_saving_syncs_the_file_and_its_folder_and_leaves_no_scratch_file(tmp_path: Path, monkeypatch):
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(descriptor: int) -> None:
        synced.append("folder" if stat.S_ISDIR(os.fstat(descriptor).st_mode) else "file")
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    cache = TemplateCache()
    _three(cache)
    path = tmp_path / "logs" / "templates.json"
    cache.save(path)
    assert synced == ["file", "folder"]
    assert os.listdir(path.parent) == ["templates.json"]
    assert len(TemplateCache.load(path)) == 3


def test_a_failed_save_keeps_the_previous_file_and_removes_its_scratch_file(tmp_path: Path, monkeypatch):
    path = tmp_path / "templates.json"
    cache = TemplateCache()
    cache.add("disk <*> is full", "disk sda is full")
    cache.save(path)
    before = path.read_bytes()
    cache.add("job <*> done", "job 1 done")

    def failing_replace(source: str, target: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space left"):
        cache.save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["templates.json"]


@pytest.mark.parametrize(("content", "why"), [
    (json.dumps([{"id": 1, "text": "a <*>"}]), "top level is a JSON array"),
    ("null", "top level is a JSON null"),
    (json.dumps({"version": 1, "next_id": 2, "aliases": {}}), '"templates" is missing'),
    (json.dumps({"version": 1, "next_id": 2, "templates": {"1": "a <*>"}}), '"templates" is a JSON object, not array'),
    (json.dumps({"version": 1, "next_id": 2, "templates": ["a <*>"]}), "template 1 is a JSON string"),
    (json.dumps({"version": 1, "next_id": 2, "templates": [{"id": "one", "text": "a <*>"}]}), '"id" is a JSON string'),
    (json.dumps({"version": 1, "next_id": 2, "templates": [{"id": 1, "text": 5}]}), '"text" is a JSON number'),
    (json.dumps({"version": 1, "next_id": 3, "templates": [{"id": 1, "text": "a <*>"}, {"id": 1, "text": "b <*>"}]}),
     "id 1 is used twice"),
    (json.dumps({"version": 1, "next_id": 3, "templates": [], "aliases": {"1": 2, "2": 1}}), "aliases loop"),
    (json.dumps({"version": 1, "next_id": 3, "templates": [], "aliases": {"x": 2}}), "alias 'x' is not an integer"),
    (json.dumps({"version": 2, "next_id": 1, "templates": []}), "version 2, expected 1"),
    ("{not json", "Expecting property name"),
])
def test_a_malformed_file_names_itself_and_the_fix(tmp_path: Path, content: str, why: str):
    path = tmp_path / "templates.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(WorkhorseError) as raised:
        TemplateCache.load(path)
    error = raised.value
    assert str(path) in error.message and why in error.message
    assert "delete" in error.hint and str(path) in error.hint


def test_a_file_that_is_not_utf8_is_refused_too(tmp_path: Path):
    path = tmp_path / "templates.json"
    path.write_bytes(b'{"version": 1, "templates": ["\xff"]}')
    with pytest.raises(WorkhorseError, match="unreadable"):
        TemplateCache.load(path)


def test_a_file_written_before_the_bound_loads_with_its_alias_chains(tmp_path: Path):
    """No `recent` list, and a replaced id whose replacement was replaced in turn."""
    path = tmp_path / "templates.json"
    path.write_text(json.dumps({
        "version": 1, "next_id": 4,
        "templates": [{"id": 3, "text": "Invalid user <*> from <*>", "example": "Invalid user bob from 1.1.1.1", "hits": 5}],
        "aliases": {"1": 2, "2": 3},
    }), encoding="utf-8")
    cache = TemplateCache.load(path)
    assert cache.resolve(1).id == cache.resolve(2).id == 3
    assert cache.add("Disk <*> full", "Disk sda full").id == 4


def test_the_candidates_a_line_gets_follow_the_templates_that_come_and_go():
    """The cache remembers a line key's candidates: a template added (or replaced) since must be
    found, and lines that start with ever new words do not grow that memory without end."""
    from workhorse.logparse.cache import MAX_LINE_KEYS

    cache = TemplateCache()
    assert cache.match("job 1 done") is None  # remembered: no candidates for ("job", "done", 2)
    narrow = cache.add("job 1 done", "job 1 done")
    assert cache.match("job 1 done") == (narrow, [])
    broad = cache.add("job <*> done", "job 2 done")  # replaces the narrow one
    assert cache.resolve(narrow.id) is broad and cache.match("job 7 done") == (broad, ["7"])
    for i in range(MAX_LINE_KEYS + 10):
        cache.match(f"w{i}x tick")
    assert len(cache._by_line_key) <= MAX_LINE_KEYS
    assert cache.match("job 8 done") == (broad, ["8"])
