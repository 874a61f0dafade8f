"""Matching a line against a template: the values it gives, and that its work stays linear in the
line whatever the template and the line (templates are learnt from client input and persisted)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import workhorse
from workhorse.logparse.template import (
    MATCH_STEPS_PER_CHAR,
    WILDCARD,
    Matcher,
    MatchResult,
    Template,
)

# A template learnt from `1:2:…:14 end` (each number a certain variable, so it starts with a
# wildcard and is tried against every line) and kept in the cache file, then, after a restart, a
# line of 40 colon-separated numbers: a backtracking matcher tries every way to share the 39
# colons out between the 14 wildcards.
_ADVERSARIAL_PARSE = textwrap.dedent("""
    import tempfile
    from pathlib import Path
    from workhorse.logparse.cache import TemplateCache
    from workhorse.logparse.parser import LogParser

    parser = LogParser(None, TemplateCache(), None)
    learnt = parser.parse_line(":".join(str(i) for i in range(1, 15)) + " end")
    assert parser.cache.resolve(learnt.template_id).text == ":".join(["<*>"] * 14) + " end"
    with tempfile.TemporaryDirectory() as folder:
        parser.cache.save(Path(folder) / "templates.json")
        restarted = LogParser(None, TemplateCache.load(Path(folder) / "templates.json"), None)
    restarted.parse_line(":".join(str(i) for i in range(1, 41)))
    print("done")
""")


def _run_guarded(code: str, seconds: float) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter with this checkout's workhorse. A regex that backtracks holds
    the GIL, so a thread cannot stop it: a separate process can."""
    source = str(Path(workhorse.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=seconds, env=env, check=True)


def test_a_line_of_many_separators_against_a_template_of_many_wildcards_does_not_hang():
    """A guard against a hang, not a speed measure: the work is a few hundred steps, and the
    exponential search this replaced would take hours on this line."""
    assert _run_guarded(_ADVERSARIAL_PARSE, seconds=20).stdout.strip() == "done"


# -- the values: those of the lazy regex the matcher replaced ------------------------------------
def _reference(parts: list[str], spanning: set[int], content: str) -> list[str] | None:
    """The backtracking regex templates were matched with: fine on short lines, exponential on long ones."""
    pattern = "".join(
        re.escape(part) + (("(.*?)" if i in spanning else r"(\S*?)") if i < len(parts) - 1 else "")
        for i, part in enumerate(parts)
    )
    found = re.fullmatch(pattern, content, re.DOTALL)
    return list(found.groups()) if found else None


_PIECES = st.sampled_from(["a", "b", ":", " ", "\t", "a:", "ab", "1"])
_TEXTS = st.lists(_PIECES, max_size=4).map("".join)


@st.composite
def _templates_and_lines(draw: st.DrawFn) -> tuple[list[str], set[int], str]:
    parts = draw(st.lists(_TEXTS, min_size=1, max_size=6))
    spanning = draw(st.sets(st.integers(0, len(parts) - 2))) if len(parts) > 1 else set()
    if draw(st.booleans()):  # a line of the template's shape, sometimes with a piece changed
        line = parts[0] + "".join(draw(_TEXTS) + part for part in parts[1:])
        if line and draw(st.booleans()):
            at = draw(st.integers(0, len(line) - 1))
            line = line[:at] + draw(_PIECES) + line[at + 1:]
    else:
        line = draw(st.lists(_PIECES, max_size=12).map("".join))
    return parts, spanning, line


@settings(max_examples=3000, deadline=None)
@given(_templates_and_lines())
def test_values_are_those_of_the_lazy_regex(case):
    parts, spanning, line = case
    result = Matcher(parts, spanning).match(line)
    assert not result.gave_up
    assert result.values == _reference(parts, spanning, line)


@pytest.mark.parametrize(("text", "spanning", "line", "values"), [
    ("<*>:<*>", (), "a:b:c", ["a", "b:c"]),  # the first wildcard as short as the rest allows
    ("<*>:<*>:x", (), "a:b:c:x", ["a", "b:c"]),
    ("<*> at <*>", (), "1:2 at Wed Jul 27", None),  # a wildcard spans no whitespace…
    ("<*> at <*>", (1,), "1:2 at Wed Jul 27", ["1:2", "Wed Jul 27"]),  # …unless it spans
    ("<*><*>", (), "ab", ["", "ab"]),
    ("(<*>)", (), "()", [""]),
    ("no wildcard", (), "no wildcard", []),
    ("a<*>a", (), "a", None),  # the parts may not overlap
])
def test_values(text, spanning, line, values):
    assert Matcher(text.split(WILDCARD), spanning).match(line).values == values


# -- the cache's path: a normalized line cut at its spaces, one token at a time --------------------
_WORDS = st.sampled_from(["a", "b", ":", "a:", "ab", "1", "(", ")", "=", WILDCARD])
_TOKENS = st.lists(_WORDS, min_size=1, max_size=4).map("".join)


@st.composite
def _normalized_templates_and_lines(draw: st.DrawFn) -> tuple[str, str]:
    text = " ".join(draw(st.lists(_TOKENS, min_size=1, max_size=5)))
    if draw(st.booleans()):  # a line of the template's shape, its wildcards filled without spaces
        line = "".join(draw(st.sampled_from(["", "a", "1", ":", "a:b", "(x)"])) if piece == "" else piece
                       for piece in re.split(f"({re.escape(WILDCARD)})", text)).replace(WILDCARD, "")
        if draw(st.booleans()):
            at = draw(st.integers(0, max(len(line) - 1, 0)))
            line = line[:at] + draw(st.sampled_from(["a", ":", " ", "1"])) + line[at + 1:]
    else:
        line = " ".join(draw(st.lists(st.lists(st.sampled_from(["a", "b", ":", "1", "("]), min_size=1, max_size=4)
                                      .map("".join), min_size=1, max_size=5)))
    return text, " ".join(line.split())


@settings(max_examples=3000, deadline=None)
@given(_normalized_templates_and_lines())
def test_the_cache_path_gives_the_values_of_the_whole_line_matcher(case):
    """`match_tokens` (the template's tokens compared with the line's) and `match` (the whole line)
    agree on every normalized line: values, and whether it matches at all."""
    text, line = case
    template = Template(text)
    assert template.match_tokens(line, line.split(" ")) == template.match(line) == _reference(
        text.split(WILDCARD), set(), line)


# -- the work: linear in the line, and capped --------------------------------------------------------
_SEPARATORS = st.sampled_from([":", " ", ".", "/", "-", "=", ",", "1", "a"])


@st.composite
def _adversarial_lines(draw: st.DrawFn) -> str:
    """Long lines of repeated separators, digit runs and words, up to 20,000 characters."""
    unit = draw(st.lists(_SEPARATORS, min_size=1, max_size=4).map("".join))
    line = (unit * (20_000 // len(unit) + 1))[: draw(st.integers(1, 20_000))]
    return line + draw(st.sampled_from(["", " end", ":x", "1"]))


@st.composite
def _adversarial_templates(draw: st.DrawFn) -> Template:
    """Many wildcards between the separators of those lines, starting with a wildcard."""
    separator = draw(st.sampled_from([":", " ", ":1", "a", ".", ""]))
    count = draw(st.integers(1, 300))
    text = separator.join([WILDCARD] * count) + draw(st.sampled_from(["", " end", ":x", " at <*>"]))
    spanning = draw(st.sets(st.integers(0, text.count(WILDCARD) - 1), max_size=3))
    return Template(text, spanning=frozenset(spanning))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(_adversarial_templates(), _adversarial_lines())
def test_matching_work_is_linear_in_the_line_and_the_template(template, line):
    result = template.attempt(line)
    wildcards = template.n_params
    # Spanning wildcards before all the others (or none): no backtracking at all, two steps a wildcard.
    first_narrow = min((i for i in range(wildcards) if i not in template.spanning), default=wildcards)
    if all(i < first_narrow for i in template.spanning):
        assert result.steps <= 2 * wildcards + 1 and not result.gave_up
    assert result.steps <= MATCH_STEPS_PER_CHAR * (len(line) + len(template.text))


def test_a_template_that_would_try_too_many_ends_gives_up_once_and_says_so(caplog):
    """Spanning wildcards around 41 that span no space: each run of the line has one colon too few
    for them, and the search tries every run, each colon at each wildcard once. Past the cap the line
    is taken as no match (which it is: on two runs the search finds so without reaching the cap)."""
    template = Template("<*> " + "<*>:" * 40 + "<*> at <*>", id=7, spanning=frozenset({0, 42}))
    runs = "1:" * 39 + "1 at "
    assert template.attempt(runs * 2 + "y") == MatchResult(None, template.attempt(runs * 2 + "y").steps)
    line = runs * 20 + "y"
    with caplog.at_level("WARNING", logger="workhorse.logparse.template"):
        first, second = template.attempt(line), template.attempt(line)
    assert first.gave_up and first.values is None and second.gave_up
    assert first.steps <= MATCH_STEPS_PER_CHAR * (len(line) + len(template.text))
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "template 7" in warnings[0] and "gave up" in warnings[0]


def test_long_adversarial_lines_through_the_parser_do_not_hang():
    """The whole path of an unseen line (cut into chunks, joined with related templates, cached),
    on lines of 30,000 characters: a guard against a hang, not a speed measure (a few seconds; a
    token-by-token comparison quadratic in the line took minutes)."""
    code = textwrap.dedent("""
        from workhorse.logparse.cache import TemplateCache
        from workhorse.logparse.parser import LogParser

        n = 30_000
        lines = [":".join(map(str, range(n)))[:n], "a " * (n // 2), ": " * (n // 2), "A" * n + "a", "/a" * (n // 2) + ":",
                 "a." * (n // 2) + "com:", ("1:2 " * n)[:n], "1" * n]
        parser = LogParser(None, TemplateCache(), None)
        for line in lines:
            for variant in (line, line[:-1] + "x", line[: n // 2]):
                parser.parse_line(variant)
        print("done")
    """)
    assert _run_guarded(code, seconds=30).stdout.strip() == "done"
