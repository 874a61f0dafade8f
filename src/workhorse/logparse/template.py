"""Log templates: a line's content cut into chunks, a template as that content with some chunks
replaced by `<*>`, and the matcher that parses later lines of a template without the model.

A chunk is a run of characters that are neither whitespace nor punctuation (`_SPLIT`: letters,
digits, `_` and any other symbol), one punctuation character, or one space (a run of whitespace).
Choosing per chunk is fine enough for every template of the Loghub-2k ground truth but Proxifier's value phrases
(each is reproduced exactly by marking the chunks its variables cover, then merging as `render`
does; `refine.merge_phrases` makes the phrases), and coarse enough that a model picks from a
handful of alternatives per line instead of writing free text.

Some chunks are decided whatever the system, following the published guidelines for log template
ground truth (Khan et al., ICSE 2022) that the corrected Loghub labels apply, and counts on those
labels: numbers, hexadecimal values, addresses, paths are variables; names and the punctuation
around a value are literal (`decided`). A model decides the rest.
"""

from __future__ import annotations

import logging
import re
from bisect import bisect_left
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from operator import itemgetter
from typing import NamedTuple

log = logging.getLogger(__name__)

WILDCARD = "<*>"

# Punctuation that separates chunks; everything else that is not a space belongs to word chunks.
_PUNCTUATION = r"=,;:()\[\]{}\"'<>|#/@.+\-!?*&%$~^`\\"
_SPLIT = re.compile(rf"(\s+|[{_PUNCTUATION}])")
_NUMBER = re.compile(r"\d+")
_DIGIT_RUN = re.compile(r"\d{4,}")
# Words in capitals, capitalised words and camelCase words are names of things, not values: on
# Loghub-2k's labels 3,460 words in capitals stay words and 24 are variables (besides Proxifier's
# `KB` and `MB` inside sizes its labels fold into one value); capitalised words 9,452 and 14,
# camelCase words 7,189 and 24. (Up to the second capital only digits and `_` may come: the same
# words as `[A-Z][A-Z0-9_]*[A-Z]…`, without trying every capital as the second on a long word.)
_NAME = re.compile(r"[A-Z][0-9_]*[A-Z][A-Z0-9_]*|[A-Z][a-z]+|[A-Za-z][a-z0-9]*[A-Z]\w*")
_HEX = re.compile(r"0[xX][0-9a-fA-F]+|(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,}")
_VALUE_WORDS = frozenset({"true", "false", "null", "root"})  # the guidelines' defaults
# Variables joined by these characters are one variable (the guidelines' dot-separated values;
# `124620k/129984k`: 4,472 of 4,474 `/` between two variables on Loghub-2k's labels).
_JOINERS = (".", "-", "/")
_BRACKETS = {"(": ")", "[": "]", "{": "}"}
WILDCARD_RUN = 2  # whole-token wildcards in a row from which plain words are taken back
# A path, as a whole token between spaces and these delimiters: on Loghub-2k's labels all 40
# one-segment paths (`/default-rack`) are variables, like the longer ones.
_PATH = re.compile(r"(?<![^\s,;:=|\"'()\[\]{}])(?:/[^/\s,;:=|\"'()\[\]{}]+)+/?(?![^\s,;:=|\"'()\[\]{}])")
# A host name under a common top-level domain (`proxy.cse.cuhk.edu.hk`, `ns1.example.com`): on
# Loghub-2k's labels 3,577 of 3,581 such names are variables (`java.net.…` is not one: it goes on).
# An address with its port and a leading `/` is one value too (`/10.251.71.240:50010`), as most of
# the labels have it (Zookeeper's alone keep `<*>:<*>`), and so is a bare host name with its address
# or a hyphenated one with its port (`msra-sa-41/10.190.173.170:9000`, `msra-sa-41:9000`: 1,110 of
# 1,116 on the labels; counters such as `ContAlloc:11` have no hyphen and stay).
_IP = r"(?:\d{1,3}\.){3}\d{1,3}"
_HOST_END = r"(?![\w-]|\.\w)"  # the name ends here (a full stop may end the sentence)
_HOSTNAME = re.compile(
    rf"(?<![\w.-])(?:/?(?:{_IP}|[A-Za-z0-9][A-Za-z0-9-]*(?:\.[A-Za-z0-9-]+)*\.(?:com|net|org|edu|gov|mil|int|io|cn|hk|"
    rf"uk|de|jp|ru|fr|info|biz|local|internal|lan|corp))(?::\d{{1,5}})?|[A-Za-z][A-Za-z0-9]*(?:-[A-Za-z0-9]+)*/{_IP}"
    rf"(?::\d{{1,5}})?|[A-Za-z][A-Za-z0-9]*(?:-[A-Za-z0-9]+)+:\d{{1,5}}){_HOST_END}"
)
# A UUID is one value (`b9000564-fe1a-409b-b8cc-1e88b294cd1d`): its short groups are not hex values
# alone, and a template keeping them would hold one object's id. (Loghub-2k's eight systems in the
# datasets folder have none; OpenStack's, among the other eight, are full of them.)
_UUID = re.compile(r"(?<![\w-])[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}(?![\w-])")
# A date and time written with spaces is one value: `Wed Jul 27 10:59:53 2005`, `2015-10-18 18:01:47,978`.
_TIMESTAMP = re.compile(
    r"\b(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{1,2} "
    r"\d{2}:\d{2}:\d{2}(?: \d{4})?|\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(?:[.,]\d+)?)\b"
)


def normalize(content: str) -> str:
    """Runs of whitespace become one space (templates are compared that way). `str.split` and
    `\\s` know the same whitespace, and split and join take a fifth of a substitution's time."""
    return " ".join(content.split())


@dataclass(frozen=True)
class Chunk:
    text: str
    kind: str  # "space" | "punct" | "word"
    variable: bool = False  # a variable whatever the model says (numbers, hex, booleans)
    constant: bool = False  # a word whatever the model says (names: `HTTPS`, `Got`, `getResources`)


def chunk(content: str) -> list[Chunk]:
    """`content` (normalized) cut into chunks. A minus sign before a number belongs to it when it
    starts the content or follows a space or punctuation (`init -2`; not `a-2`, a hyphen). Every
    chunk of a path (`/var/lib/x`, and of one segment, `/default-rack`: the guidelines' path rule),
    a timestamp, a host name or a UUID is a variable, so the template has one `<*>` for it once
    `render` merges them."""
    chunks: list[Chunk] = []
    for part in _SPLIT.split(content):
        if not part:
            continue
        if part.isspace():
            chunks.append(Chunk(" ", "space"))
        elif len(part) == 1 and _SPLIT.fullmatch(part):
            chunks.append(Chunk(part, "punct"))
        elif _NUMBER.fullmatch(part) and chunks and chunks[-1].text == "-" and (len(chunks) == 1 or chunks[-2].kind != "word"):
            chunks[-1] = Chunk("-" + part, "word", True)
        else:
            value = _is_value(part)
            chunks.append(Chunk(part, "word", value, not value and bool(_NAME.fullmatch(part))))
    return _spans_as_values(content, chunks)


def _spans_as_values(content: str, chunks: list[Chunk]) -> list[Chunk]:
    """Chunks inside a path, a timestamp, a host name or a UUID are variables."""
    spans = [m.span() for pattern in (_PATH, _TIMESTAMP, _HOSTNAME, _UUID) for m in pattern.finditer(content)]
    if not spans:
        return chunks
    out, position = [], 0
    for piece in chunks:
        start, position = position, position + len(piece.text)
        inside = any(a <= start and position <= b for a, b in spans)
        out.append(Chunk(piece.text, piece.kind, True, False) if inside else piece)
    return out


def _is_value(word: str) -> bool:
    # A word with a run of four or more digits is an id (`job_1445144423722_0020`): on Loghub-2k's
    # labels, all 2,087 such words are variables, while `ssh2`, `e820` or `SOCKS5` stay words.
    return bool(_NUMBER.fullmatch(word) or _HEX.fullmatch(word) or _DIGIT_RUN.search(word)) or word.lower() in _VALUE_WORDS


def render(pieces: Sequence[str]) -> str:
    """Join chunk texts and wildcards into a canonical template: adjacent wildcards, and
    wildcards joined by `.`, `-` or `/`, become one."""
    text = "".join(pieces)
    while True:
        merged = text.replace(WILDCARD + WILDCARD, WILDCARD)
        for joiner in _JOINERS:
            merged = merged.replace(WILDCARD + joiner + WILDCARD, WILDCARD)
        if merged == text:
            return text
        text = merged


def empty_slots(chunks: Sequence[Chunk]) -> set[int]:
    """Chunk indexes where an empty bracket pair opens after a space or at the start, `… ()`:
    an empty value slot, whose template is `(<*>)` (a call such as `init()` is not one)."""
    slots = set()
    for i in range(len(chunks) - 1):
        opener, closer = chunks[i].text, chunks[i + 1].text
        if _BRACKETS.get(opener) == closer and (i == 0 or chunks[i - 1].kind == "space"):
            slots.add(i)
    return slots


@dataclass
class Template:
    """A template and the matcher for its lines. `<*>` matches any text without whitespace, also
    none: templates are made per chunk and a wildcard that could swallow spaces would let
    `… rhost=<*>` parse `… rhost=10.0.0.1 user=root` too. The exceptions span: a wildcard that covers
    spaces in the template's own example line (a timestamp), and those in `spanning` (a value phrase,
    `refine.merge_phrases`); they match any text. Each wildcard takes the shortest value that lets
    the rest of the line match (`Matcher`)."""

    text: str
    id: int = 0
    example: str = ""  # the first line (content) it was made for: shown to the model as a demonstration
    hits: int = 0
    spanning: frozenset[int] = frozenset()  # indexes of wildcards that match spaces too
    literal_chars: int = field(init=False)
    # The spaces every line of the template has (its wildcards cover none), None when one spans
    # spaces: the cache tries a line only against templates with as many (`TemplateCache.match`).
    spaces: int | None = field(init=False)
    _matcher: Matcher = field(init=False, repr=False, compare=False)
    _tokens: TokenMatcher | None = field(init=False, repr=False, compare=False)  # None: a wildcard spans spaces
    _gave_up: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.spanning = frozenset(self.spanning) | spanning_in(self.text, self.example)
        self._matcher = Matcher(self.text.split(WILDCARD), self.spanning)
        self.literal_chars = self._matcher.literal_chars
        self.spaces = None if self.spanning else self.text.count(" ")  # a wildcard holds no space
        self._tokens = None if self.spanning else TokenMatcher(self.text)

    @property
    def n_params(self) -> int:
        return self.text.count(WILDCARD)

    @property
    def first_word(self) -> str | None:
        """The first chunk when it is literal (the cache's index key), else None."""
        return first_word(self.text)

    @property
    def last_word(self) -> str | None:
        """The last chunk when it is literal (the cache's other index key), else None."""
        return last_word(self.text)

    def match(self, content: str) -> list[str] | None:
        """The parameter values when the (normalized) content is a line of this template."""
        return self.attempt(content).values

    def match_tokens(self, content: str, tokens: Sequence[str]) -> list[str] | None:
        """`match` for a normalized content (single spaces) and the same cut at its spaces: the
        cache's lines, cut once for all the templates it tries."""
        result = self._matcher.match(content) if self._tokens is None else self._tokens.match(tokens)
        return (self._reported(content, result) if result.gave_up else result).values

    def attempt(self, content: str) -> MatchResult:
        """`match` with the work it took."""
        return self._reported(content, self._matcher.match(content))

    def _reported(self, content: str, result: MatchResult) -> MatchResult:
        """The result, its giving up logged (once per template: a client may send many such lines)."""
        if result.gave_up and not self._gave_up:
            self._gave_up = True
            log.warning("template %d (%r) gave up on a line of %d characters after %d steps; taken as no match",
                        self.id, self.text[:80], len(content), result.steps)
        return result

    def generalizes(self, other: Template) -> bool:
        """Every line of `other` is a line of this one (and they differ)."""
        return other.text != self.text and self.match(other.text) is not None


# -- matching --------------------------------------------------------------------------------------
# Templates are learnt from client input and kept across restarts, so the time a line takes must not
# depend on their shape. A backtracking regex (`(\S*?):(\S*?):…`) tries every way of sharing a
# line's separators out among the wildcards: exponential in their number. Python's `re` has no other
# mode, and an RE2 engine would add a compiled dependency with its own idea of whitespace (no `\v`,
# no Unicode spaces). Templates need none of a regex's generality, only literal parts in order with a
# wildcard between each two, so `str.find` and `str.rfind` between bounds do: the values are the ones
# the lazy regex gave (each wildcard as short as the rest of the line allows).
_WHITESPACE = re.compile(r"\s")  # what a wildcard that spans no space may not cover (`\S`'s complement)
# The work is one `rfind` and one `find` per wildcard when the bounds are exact (`_start_bounds`):
# always for templates without spanning wildcards or whose spanning wildcards come first. Otherwise
# the search may try ends that lead nowhere, each at most once per wildcard and run, and stops at
# this many steps per character of the line and the template, taking the line as no match.
MATCH_STEPS_PER_CHAR = 4


class MatchResult(NamedTuple):
    values: list[str] | None  # the wildcards' values; None: the line is not one of the template's
    steps: int  # searches done (each a `find` or `rfind` between bounds, or a dead end)
    gave_up: bool = False  # the cap was reached (values is None)


class _Starts(NamedTuple):
    """Where a wildcard's value may start for the rest of the template to match: no start outside
    [lo, hi] does; when `exact`, every start inside does."""

    lo: int
    hi: int
    exact: bool


@dataclass(slots=True)
class _Value:
    """One wildcard's value in the search: from `start`, ends from `cursor` to `last` are left to try."""

    start: int
    region: int  # the next whitespace for a wildcard that spans none (its value ends there at the latest), else -1
    cursor: int
    last: int
    end: int = -1


class _Line:
    """A line being matched, with the steps spent on it."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.steps = 0
        self._spaces = _whitespace_at(text)

    def next_space(self, position: int) -> int:
        """The first whitespace at or after `position` (the line's length when none)."""
        i = bisect_left(self._spaces, position)
        return self._spaces[i] if i < len(self._spaces) else len(self.text)

    def run_start(self, position: int) -> int:
        """The first position of the whitespace-free run that ends at `position`: the earliest start
        of a value ending there that spans no space."""
        i = bisect_left(self._spaces, position)
        return self._spaces[i - 1] + 1 if i else 0


@lru_cache(maxsize=4)  # the cache tries one line against many templates in a row
def _whitespace_at(text: str) -> tuple[int, ...]:
    return tuple(m.start() for m in _WHITESPACE.finditer(text))


class Matcher:
    """Lines against a template whose text split at `<*>` is `parts`: wildcard i lies between parts
    i and i + 1 and covers whitespace only when i is in `spanning`."""

    __slots__ = ("_budget", "_required", "literal_chars", "parts", "spanning")

    def __init__(self, parts: Sequence[str], spanning: Collection[int]) -> None:
        self.parts = tuple(parts)
        self.spanning = frozenset(spanning)
        self.literal_chars = sum(map(len, self.parts))
        # The longest part: a line without it is no match, whatever ends it shares (Mac's
        # `<*> GoogleSoftwareUpdateAgent[<*>] … -[KSAgentApp …` templates). One `in` tells.
        self._required = max(self.parts, key=len)
        self._budget = MATCH_STEPS_PER_CHAR * (self.literal_chars + len(WILDCARD) * (len(self.parts) - 1))

    def match(self, content: str) -> MatchResult:
        """The values of the wildcards when `content` is a line of the template, and the work done."""
        parts = self.parts
        if len(parts) == 1:
            return MatchResult([] if content == parts[0] else None, 0)
        # Most templates tried on a line fail here, at no cost.
        if (self.literal_chars > len(content) or not content.startswith(parts[0]) or not content.endswith(parts[-1])
                or self._required not in content):
            return _NO_MATCH
        line = _Line(content)
        end = len(content) - len(parts[-1])  # where the last wildcard's value ends
        bounds = _start_bounds(parts, self.spanning, line, end)
        if bounds is None or not bounds[0].lo <= len(parts[0]) <= bounds[0].hi:
            return MatchResult(None, line.steps)
        if bounds[0].exact:  # so are all the others: no end tried can lead nowhere
            return MatchResult(_first_ends(parts, content, end, bounds), line.steps + len(parts) - 1)
        return _search(parts, self.spanning, line, end, bounds, self._budget + MATCH_STEPS_PER_CHAR * len(content))


_NO_MATCH = MatchResult(None, 0)


class TokenMatcher:
    """Normalized lines (single spaces) cut at their spaces against a template whose wildcards span
    none. The line's i-th space is then the template's i-th, so each token matches on its own: the
    literal tokens are compared all at once (where most templates tried on a line fail), and a token
    with one wildcard needs a prefix and a suffix. The values are `Matcher`'s, each wildcard as
    short as the rest of its token allows."""

    __slots__ = ("_literal_texts", "_literals", "_slots", "size")

    def __init__(self, text: str) -> None:
        tokens = text.split(" ")
        self.size = len(tokens)
        literal = [i for i, token in enumerate(tokens) if WILDCARD not in token]
        self._literals = itemgetter(*literal) if literal else None
        self._literal_texts = self._literals(tokens) if self._literals is not None else None
        # per token with wildcards, in order: its position, and its prefix and suffix (one wildcard)
        # or a matcher (more)
        self._slots = tuple(
            (i, *parts, None) if len(parts := token.split(WILDCARD)) == 2 else (i, "", "", Matcher(parts, ()))
            for i, token in enumerate(tokens) if WILDCARD in token
        )

    def match(self, tokens: Sequence[str]) -> MatchResult:
        if len(tokens) != self.size or (self._literals is not None and self._literals(tokens) != self._literal_texts):
            return _NO_MATCH
        values: list[str] = []
        steps = 0
        for i, prefix, suffix, matcher in self._slots:
            token = tokens[i]
            if matcher is not None:
                result = matcher.match(token)
                steps += result.steps
                if result.values is None:
                    return MatchResult(None, steps, result.gave_up)
                values += result.values
            elif len(token) >= len(prefix) + len(suffix) and token.startswith(prefix) and token.endswith(suffix):
                values.append(token[len(prefix):len(token) - len(suffix)])
            else:
                return MatchResult(None, steps)
        return MatchResult(values, steps)


def _start_bounds(parts: Sequence[str], spanning: Collection[int], line: _Line, end: int) -> list[_Starts] | None:
    """Per wildcard, where its value may start (`_Starts`), from the last wildcard back: each part
    as late as the starts of the next wildcard allow. None when some part cannot fit.

    The bounds are exact unless a wildcard that spans no space comes before one that does and the
    part between them fits in more than one whitespace-free run: the bounds then keep the
    outermost starts, and the search tries the runs."""
    last = len(parts) - 2
    bounds: list[_Starts] = [_Starts(0, end, True)] * (last + 1)
    bounds[last] = _Starts(0 if last in spanning else line.run_start(end), end, True)
    for i in range(last, 0, -1):
        starts = _starts_before(bounds[i], parts[i], i - 1 in spanning, line)
        if starts is None:
            return None
        bounds[i - 1] = starts
    return bounds


def _starts_before(after: _Starts, part: str, spans: bool, line: _Line) -> _Starts | None:
    """The starts of the wildcard before `part`, from `after`, the starts of the one after it.

    Its value ends where `part` is found with the next value starting within `after`; the latest
    such place bounds the starts (one `rfind`). A wildcard that spans spaces may start anywhere
    before; one that spans none, anywhere in the run of that place, and in earlier runs too when
    `part` also fits there (a second `rfind` tells)."""
    lowest = max(after.lo - len(part), 0)
    line.steps += 1
    at = line.text.rfind(part, lowest, after.hi)
    if at < 0:
        return None
    if spans:
        return _Starts(0, at, after.exact)
    run = line.run_start(at)
    if after.exact and line.next_space(after.lo) >= after.hi:
        return _Starts(run, at, True)  # every place it fits lies in this run
    line.steps += 1
    if line.text.rfind(part, lowest, min(run - 1 + len(part), after.hi)) < 0:
        return _Starts(run, at, after.exact)
    return _Starts(line.run_start(lowest), at, False)


def _first_ends(parts: Sequence[str], text: str, end: int, bounds: list[_Starts]) -> list[str]:
    """The values when every bound is exact: each wildcard's value ends where the next part is
    first found with the next value starting within its bounds, which leads to a match (and lies in
    the value's whitespace-free run: a start within exact bounds has a match within it)."""
    values, start = [], len(parts[0])
    for part, after in zip(parts[1:-1], bounds[1:], strict=True):
        found = text.find(part, max(start, after.lo - len(part)), after.hi)
        values.append(text[start:found])
        start = found + len(part)
    values.append(text[start:end])
    return values


def _search(parts: Sequence[str], spanning: Collection[int], line: _Line, end: int, bounds: list[_Starts],
            budget: int) -> MatchResult:
    """The values, wildcard by wildcard, each ending at the first place the rest can match from:
    the order a lazy backtracking regex tries them in, so the same values. Where the bounds are
    exact the first end tried leads to a match; elsewhere an end that leads nowhere is remembered
    per wildcard and whitespace-free run (`failed`), so no end is tried twice."""
    last = len(parts) - 2
    failed: list[dict[int, int]] = [{} for _ in range(last + 1)]  # per wildcard: region → least start that failed

    def open_value(i: int, start: int) -> _Value | None:
        spans = i in spanning
        region = -1 if spans else line.next_space(start)
        known = failed[i].get(region)
        if known is not None and start >= known:
            return None  # a start as late, in the same run, already led nowhere
        latest = len(line.text) if spans else region
        if known is not None:
            latest = min(latest, known - 1)  # ends from there on were tried from that start
        if i == last:
            return _Value(start, region, start, min(latest, end))
        after, size = bounds[i + 1], len(parts[i + 1])
        return _Value(start, region, max(start, after.lo - size), min(latest, after.hi - size))

    first = open_value(0, len(parts[0]))
    assert first is not None  # nothing has failed yet
    values = [first]
    while values:
        if line.steps >= budget:
            return MatchResult(None, line.steps, gave_up=True)
        line.steps += 1
        i, value = len(values) - 1, values[-1]
        found = _next_end(parts, line, end, i == last, i, value)
        if found < 0:
            failed[i][value.region] = value.start
            values.pop()
            continue
        value.end, value.cursor = found, found + 1
        if i == last:
            return MatchResult([line.text[v.start:v.end] for v in values], line.steps)
        following = open_value(i + 1, found + len(parts[i + 1]))
        if following is not None:
            values.append(following)
    return MatchResult(None, line.steps)


def _next_end(parts: Sequence[str], line: _Line, end: int, is_last: bool, i: int, value: _Value) -> int:
    """The next end to try for wildcard i's value: where part i + 1 is found (the line's end for
    the last wildcard), or -1."""
    if value.cursor > value.last:
        return -1
    if is_last:
        return end if value.cursor <= end <= value.last else -1
    part = parts[i + 1]
    return line.text.find(part, value.cursor, value.last + len(part))


def first_word(text: str) -> str | None:
    """The first chunk of a line or template, None when a wildcard may be part of it (`<*>…`,
    `blk_<*>`: the lines' first chunks vary)."""
    if text.startswith(WILDCARD):
        return None
    head = _SPLIT.split(text, maxsplit=1)[0]
    if not head:
        return text[:1]  # punctuation: a chunk of its own
    return None if text.startswith(WILDCARD, len(head)) else head


# A chunk at the start of a text: a run of word characters or one other character (`_SPLIT`'s pieces).
_LEADING_CHUNK = re.compile(rf"[^\s{_PUNCTUATION}]+|.", re.S)


def last_word(text: str) -> str | None:
    """The last chunk of a line or template, None when a wildcard may be part of it."""
    if text.endswith(WILDCARD):
        return None
    found = _LEADING_CHUNK.match(text[::-1])  # anchored at the end: linear in the chunk's length
    if found is None:
        return None  # an empty text
    tail = found.group()[::-1]
    if _SPLIT.fullmatch(tail):
        return tail  # punctuation: a chunk of its own
    return None if text.endswith(WILDCARD, 0, len(text) - len(tail)) else tail


def template_from_choices(chunks: Sequence[Chunk], variable: Sequence[bool], filled: set[int] = frozenset()) -> str:
    """The template that marks `variable` chunks as `<*>` (and fills the empty slots in `filled`)."""
    pieces = []
    for i, (piece, is_variable) in enumerate(zip(chunks, variable, strict=True)):
        pieces.append(WILDCARD if is_variable else piece.text)
        if i in filled:
            pieces.append(WILDCARD)
    return render(pieces)


def decided(chunks: Sequence[Chunk]) -> list[bool | None]:
    """Per chunk, whether it is a variable whatever the model says (True), a literal whatever the
    model says (False: spaces, names, punctuation around a certain value), or the model's choice."""
    out: list[bool | None] = []
    for i, piece in enumerate(chunks):
        if piece.variable:
            out.append(True)
        elif piece.kind == "space" or piece.constant or _stands_alone(chunks, i) or _around_value(chunks, i):
            out.append(False)
        else:
            out.append(None)
    return out


def choice_pattern(chunks: Sequence[Chunk]) -> str:
    """A regex (Rust syntax, for a grammar-constrained model) of every template of these chunks:
    each chunk the model decides as itself or `<*>`, decided chunks as decided (a timestamp's
    spaces included, only as `<*>`), and an optional `<*>` in each empty slot."""
    wildcard = re.escape(WILDCARD)
    slots = empty_slots(chunks)
    parts = []
    for i, (piece, decision) in enumerate(zip(chunks, decided(chunks), strict=True)):
        literal = re.escape(piece.text)
        parts.append(wildcard if decision else literal if decision is False else f"(?:{literal}|{wildcard})")
        if i in slots:
            parts.append(f"(?:{wildcard})?")
    return "".join(parts)


def spanning_in(text: str, example: str) -> frozenset[int]:
    """Indexes of the template's wildcards that cover whitespace in `example` (aligned by the text,
    each wildcard as short as the alignment allows)."""
    parts = text.split(WILDCARD)
    if not example or len(parts) == 1:
        return frozenset()
    values = Matcher(parts, range(len(parts) - 1)).match(example).values
    if values is None:
        return frozenset()
    return frozenset(i for i, value in enumerate(values) if _WHITESPACE.search(value))


def _stands_alone(chunks: Sequence[Chunk], i: int) -> bool:
    """Punctuation standing alone between spaces (`size = 3`, `proxy a.org:80 - Could not …`) is
    never a value: all 1,639 such chunks on Loghub-2k's labels are literal."""
    return (
        chunks[i].kind == "punct"
        and (i == 0 or chunks[i - 1].kind == "space")
        and (i + 1 == len(chunks) or chunks[i + 1].kind == "space")
    )


def _around_value(chunks: Sequence[Chunk], i: int) -> bool:
    """Punctuation around a certain variable's token is not part of it: a bracket or quote that
    opens the token (`[<*>]`, `'<*>'`), one that closes it, a `:`, `,`, `;` or `.` that ends it
    (`from <*>: …`, `server: <*>. Already …`), and punctuation between it and a word (`<*>:Got`).
    A small model that has just written `<*>` tends to go on with another. On Loghub-2k's labels
    these hold for 759 of 782 openers and 3,226 of 3,252 closers (Linux's `Authentication failed
    from <*>: …` folds `(<address>)` into its variable), besides Proxifier's `(` and `<` inside the
    value phrases its labels fold (`refine.merge_phrases` joins those)."""
    piece = chunks[i]
    if piece.kind != "punct":
        return False
    before = chunks[i - 1] if i else None
    after = chunks[i + 1] if i + 1 < len(chunks) else None
    if after is not None and after.variable and (before is None or before.kind == "space"):
        return piece.text in "[({'\""
    if before is None or not before.variable:
        return False
    if after is None or after.kind == "space":
        return piece.text in ")]}'\":,;."
    return piece.text in ")]}'\"" or (piece.text in ":," and after.kind == "word" and not after.variable)


def keep_words_in_wildcard_runs(template: str, content: str, run: int = WILDCARD_RUN, values: Collection[int] = ()) -> str:
    """A template whose runs of `run` or more whole-token wildcards keep the tokens that hold no
    certain variable (`Could not connect to proxy <*> <*> <*> <*> <*> <*>` from
    `… proxy a.org:80 - Could not resolve a.org` becomes `… proxy <*> - Could not resolve <*>`).
    `values`: token positions shown to be values by the lines of the content's group (`grouping`),
    which stay wildcards.

    A small model that has written a few wildcards in a row tends to go on to the end of the line;
    the labels never do: on Loghub-2k no run of two or more whole-token variables covers a token
    without a certain variable."""
    tokens, tokens_of_line = template.split(" "), content.split(" ")
    if len(tokens) != len(tokens_of_line):  # a wildcard spans spaces: tokens do not line up
        return template
    out, i = list(tokens), 0
    while i < len(tokens):
        end = i
        while end < len(tokens) and tokens[end] == WILDCARD:
            end += 1
        if end - i >= run:
            for k in range(i, end):
                if k not in values and not any(c.variable for c in chunk(tokens_of_line[k])):
                    out[k] = tokens_of_line[k]
        i = max(end, i + 1)
    return " ".join(out)


# A word in angle brackets (`<none>`, `<init>`): a placeholder the program prints, not a value.
_BRACKETED_WORD = re.compile(r"<[A-Za-z][A-Za-z_-]*>")


def keep_bracketed_words(template: str, content: str) -> str:
    """A template with the line's bracketed words (`<none>`) put back where the model wrote a
    wildcard into them: `<<*>` reads as a literal `<` before a wildcard, which then swallows
    `none>`, and the line's groups would split on what is a constant."""
    tokens, tokens_of_line = template.split(" "), content.split(" ")
    if len(tokens) != len(tokens_of_line):
        return template
    return " ".join(line_token if WILDCARD in token and _BRACKETED_WORD.fullmatch(line_token) else token
                    for token, line_token in zip(tokens, tokens_of_line, strict=True))


@lru_cache(maxsize=4096)  # a new template is compared with every cached one that starts like it (`refine.join`)
def template_pieces(text: str) -> tuple[str, ...]:
    """A template's chunks as texts, each wildcard one piece."""
    out: list[str] = []
    for i, part in enumerate(text.split(WILDCARD)):
        if i:
            out.append(WILDCARD)
        out.extend(c.text for c in chunk(part))
    return tuple(out)


# An address or host name with its port, as one value (`/10.0.0.1:2181`, `msra-sa-41:9000`).
_WITH_PORT = re.compile(rf"(/?(?:{_IP}|[A-Za-z0-9][A-Za-z0-9.-]*)):(\d{{1,5}})")


def ports_apart(text: str, example: str, spanning: frozenset[int] = frozenset()) -> tuple[str, frozenset[int]]:
    """The template with each wildcard whose value in `example` is an address or host with its
    port written as two, `<*>:<*>`, and its spanning wildcards renumbered. For deployments whose
    convention keeps the port apart (a per-deployment option, `LogParser(ports="apart")`): log
    conventions differ here, Loghub's labels too (Zookeeper's keep two values, HDFS's one)."""
    parts = text.split(WILDCARD)
    values = Template(text, example=example, spanning=spanning).match(example) if example else None
    if values is None:
        return text, spanning
    out, renumbered, index = [parts[0]], set(), 0
    for i, (value, part) in enumerate(zip(values, parts[1:], strict=True)):
        if i in spanning:
            renumbered.add(index)
        if _WITH_PORT.fullmatch(value):
            out.append(WILDCARD + ":" + WILDCARD)
            index += 2
        else:
            out.append(WILDCARD)
            index += 1
        out.append(part)
    return "".join(out), frozenset(renumbered)
