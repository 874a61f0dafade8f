"""Unseen lines grouped by their structure before the model sees any of them, and the values that
the group's lines show by varying while the rest of the line holds.

A line is read as tokens (split at spaces) whose certain variables (`template.chunk`) are already
`<*>`: its shape. Lines of one event have the same number of tokens and the same first token (the
first token names the event, as in Drain's prefix tree; the cache indexes templates by it too).
Inside such a group a token position either holds the same shape on every line, or varies. A varying
position is a **value** when the lines themselves say so:

- every line has a certain variable in that token (`2.36-9+deb12u7`, `252.39-1~deb12u1`: a version
  with a suffix is one value, not `<*>+deb12u7` and `<*>~deb12u1`);
- or it varies like a name (package names, class names, user names, `name:arch` pairs): at least
  `open_distinct` different tokens, more than a closed set of event words holds; or, in a smaller
  group, at least `min_distinct` that repeat little (at least `open_share` of the lines bring a
  token not seen before);
- and, below `open_distinct`, the lines do not differ there in a name in capitals, capitalised or in
  camelCase (`(uid=0)` and `LOGIN(uid=0)`: names stay words).

Otherwise the varying position holds the event's own words (`status installed …`, `status
unpacked …`: a closed set, each word on many lines): the group is split by it, the position with
the fewest different tokens first, and each part is looked at again. What is left are groups whose
lines differ only in values; each needs one template, made once for all its lines.

A token a group showed to be a value (with a digit or punctuation in it: `libc6:amd64`) is a value
wherever it turns up again, in a group of one line too (`values`, kept by the template cache).

Why these thresholds, and where they were chosen: see `Evidence`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from workhorse.logparse.template import WILDCARD, Chunk, chunk, render


@dataclass(frozen=True)
class Evidence:
    """When a varying position is a value (the thresholds of the rules above).

    How the defaults were chosen: on Loghub-2k's eight systems in the shared datasets folder and on
    generated dpkg logs (`evals/dpkg_log.py`), never on Loghub-2k's other eight, by listing every
    varying position the splitting meets with its number of different tokens, its number of lines,
    and whether the labels keep it as a word (`benchmarks/grouping_evidence.py` prints the list).
    Event words formed closed sets of at most 9 different tokens (Hadoop; dpkg's states are 8);
    the largest variables had 20 to 150 (dpkg's package names and versions, OpenSSH's user names
    53). Below that the two overlap, and the share of new tokens or the model decides.
    `workhorse bench logs --loso` checks the choice leave-one-system-out."""

    # A position with this many different tokens is a value whatever its lines: well above the
    # largest closed set of event words, well below the names.
    open_distinct: int = 16
    # In a smaller group, a name shows by repeating little: at least `open_share` of the group's
    # lines bring a token not seen before there (distinct tokens / lines), and at least
    # `min_distinct` different ones. Event words in a handful of lines can do that too (3 different
    # in 3 lines, 4 in 4, on the data above; none with 5), so fewer are left to the model and the
    # cache's sibling rule.
    min_distinct: int = 5
    open_share: float = 0.5


EVIDENCE = Evidence()
# Token visits the splitting of one group may take, per token of its lines (`_split`): a group
# whose event words need many splits stays far below (each split visits its part once).
SPLIT_WORK = 16
# Punctuation that wraps a value and stays in the template (`[<*>]`, `'<*>'`, `(<*>),`).
_OPENERS = frozenset("[({'\"<")
_CLOSERS = frozenset(")]}'\">,;.:")
_KEY_ENDS = frozenset("=:")


@dataclass
class Line:
    """One line's content, its chunks, and its tokens (chunk index ranges) with their shapes."""

    content: str
    chunks: list[Chunk]
    spans: list[tuple[int, int]]  # per token: [start, end) in chunks
    shapes: list[str]  # per token: its text with certain variables as `<*>`
    weight: int = 1  # the lines it stands for (a cached template's example: the lines it matched)

    @classmethod
    def of(cls, content: str, weight: int = 1) -> Line:
        chunks = chunk(content)
        spans, start = [], 0
        for i, piece in enumerate(chunks):
            if piece.kind == "space":
                spans.append((start, i))
                start = i + 1
        spans.append((start, len(chunks)))
        shapes = [render([WILDCARD if c.variable else c.text for c in chunks[a:b]]) for a, b in spans]
        return cls(content, chunks, spans, shapes, max(1, weight))

    def token(self, position: int) -> list[Chunk]:
        a, b = self.spans[position]
        return self.chunks[a:b]

    def core(self, position: int) -> str:
        """The token without the punctuation that wraps it (`(host)` → `host`, `pkg,` → `pkg`)."""
        head, tail = _kept_edges([self.token(position)])
        return "".join(c.text for c in self.token(position)[head:len(self.token(position)) - tail])


@dataclass
class Group:
    """Lines that differ only in values: `values` are the token positions shown to vary."""

    lines: list[Line]
    values: frozenset[int] = frozenset()
    known: int = 0  # how many of `lines` (the first ones) stand for cached templates, not new lines
    _edges: dict[int, tuple[int, int]] = field(default_factory=dict, repr=False, compare=False)  # per value position

    @property
    def new_lines(self) -> list[Line]:
        return self.lines[self.known:]

    @property
    def representative(self) -> int:
        """The index of the line whose template is made: the first new line with something in
        each of its values (`()` and `(host.example.org)`: the second shows where the value goes)."""
        for index in range(self.known, len(self.lines)):
            if all(self._value_range(index, p)[0] < self._value_range(index, p)[1] for p in self.values):
                return index
        return self.known

    def _value_range(self, index: int, position: int) -> tuple[int, int]:
        a, b = self.lines[index].spans[position]
        if position not in self._edges:
            self._edges[position] = _kept_edges([other.token(position) for other in self.lines])
        head, tail = self._edges[position]
        return a + head, b - tail

    def value_texts(self) -> set[str]:
        """What its lines hold at its value positions (each value without its kept edges)."""
        out = set()
        for index, line in enumerate(self.lines):
            for position in self.values:
                a, b = self._value_range(index, position)
                if a < b:
                    out.add("".join(c.text for c in line.chunks[a:b]))
        return out

    def chunks(self, index: int = 0) -> list[Chunk]:
        """The chunks of line `index` with the chunks of each value position marked as variables
        (all but the punctuation that wraps the value on every line, and a `key=` or `key:` the
        lines share)."""
        line = self.lines[index]
        out = list(line.chunks)
        for position in self.values:
            for i in range(*self._value_range(index, position)):
                piece = out[i]
                out[i] = Chunk(piece.text, piece.kind, True, False)
        return out


def group_lines(contents: Mapping[str, int] | Sequence[str], known: Mapping[str, int] | Sequence[str] = (),
                evidence: Evidence = EVIDENCE, values: Collection[str] = frozenset()) -> list[Group]:
    """Groups of `contents` (normalized, different; with the number of lines of each when a
    mapping), each with the token positions its lines show to be values. `known`: example lines of
    cached templates (with the lines each matched), evidence for the groups they fall in (a group
    that holds none of `contents` is left out). `values`: tokens already shown to be values
    (`Group.value_texts` of earlier groups): a position where every line holds one is a value
    however few its lines (a package's name in its one `remove` line, known from its `status`
    lines). Groups come in the order of their first new line."""
    by_key: dict[tuple[int, str], list[Line]] = {}
    cached: set[int] = set()  # ids of the lines that stand for cached templates
    order: dict[int, int] = {}  # id of a new line → its place in `contents`
    for is_known, (content, weight) in [(True, row) for row in _counted(known)] + [(False, row) for row in _counted(contents)]:
        line = Line.of(content, weight)
        if is_known:
            cached.add(id(line))
        else:
            order[id(line)] = len(order)
        by_key.setdefault((len(line.spans), line.shapes[0]), []).append(line)
    groups = []
    for members in by_key.values():
        if all(id(line) in cached for line in members):
            continue
        for part in _split(members, frozenset({0}), evidence, values):
            old = [line for line in part.lines if id(line) in cached]
            new = [line for line in part.lines if id(line) not in cached]
            if new:
                groups.append(Group(old + new, part.values, len(old)))
    groups.sort(key=lambda g: order[id(g.new_lines[0])])
    return groups


def _counted(contents: Mapping[str, int] | Sequence[str]) -> list[tuple[str, int]]:
    return list(contents.items()) if isinstance(contents, Mapping) else [(content, 1) for content in contents]


def _split(lines: list[Line], fixed: frozenset[int], evidence: Evidence, known: Collection[str]) -> list[Group]:
    """Split `lines` (of one token count) by their event words until only values vary.

    Each split looks at every line of the part it splits, so lines built to peel off one at a time
    would cost the square of their number; past `SPLIT_WORK` token visits per token of `lines`,
    the parts left are split by their whole shape instead (no values: the lines are learnt as they
    are, as without grouping)."""
    budget = SPLIT_WORK * len(lines) * len(lines[0].spans)
    done: list[Group] = []
    pending = [(lines, fixed)]
    while pending:
        part, part_fixed = pending.pop()
        budget -= len(part) * len(part[0].spans)
        if budget < 0:
            done.extend(_by_shape(part))
            continue
        values, position = _decide(part, part_fixed, evidence, known)
        if position is None:
            done.append(Group(part, frozenset(values)))
            continue
        parts: dict[str, list[Line]] = {}
        for line in part:
            parts.setdefault(line.shapes[position], []).append(line)
        pending.extend((sub, part_fixed | {position}) for sub in reversed(parts.values()))
    return done


def _decide(lines: list[Line], fixed: frozenset[int], evidence: Evidence, known: Collection[str]) -> tuple[set[int], int | None]:
    """The value positions of `lines`, and the word position to split them on (None: none varies)."""
    values, words = set(), []
    for position in range(len(lines[0].spans)):
        if position in fixed:
            continue
        if known and all(line.core(position) in known for line in lines):
            values.add(position)
            continue
        shapes = Counter(line.shapes[position] for line in lines)
        if len(shapes) == 1:
            continue
        if _is_value(lines, position, shapes, evidence):
            values.add(position)
        else:
            words.append((len(shapes), position))
    return values, (min(words)[1] if words else None)


def _by_shape(lines: list[Line]) -> list[Group]:
    parts: dict[tuple[str, ...], list[Line]] = {}
    for line in lines:
        parts.setdefault(tuple(line.shapes), []).append(line)
    return [Group(part) for part in parts.values()]


def _is_value(lines: list[Line], position: int, shapes: Counter[str], evidence: Evidence) -> bool:
    distinct = len(shapes)
    if distinct >= evidence.open_distinct:
        return True  # more than a closed set of words holds, names in capitals included (class names)
    names = [{c.text for c in line.token(position) if c.constant} for line in lines]
    if any(n != names[0] for n in names):
        return False  # names in capitals, capitalised or camelCase are words (`template._NAME`): `(uid=0)`, `LOGIN(uid=0)`
    if all(WILDCARD in shape for shape in shapes):
        return True
    weight = sum(line.weight for line in lines)
    return distinct >= evidence.min_distinct and distinct >= evidence.open_share * weight


def _kept_edges(tokens: list[list[Chunk]]) -> tuple[int, int]:
    """How many chunks at the start and at the end of a value's token stay literal: wrapping
    punctuation every line has (`[`, `(`, `'`; `]`, `,`, `:`), and a key every line shares
    (`user=`, `pid:`)."""
    shortest = min(len(t) for t in tokens)
    head = 0
    while head < shortest and len({t[head].text for t in tokens}) == 1 and tokens[0][head].text in _OPENERS:
        head += 1
    # a shared key: the same chunks up to and including a `=` or `:`, when something after it varies
    same = 0
    while same < shortest and len({t[same].text for t in tokens}) == 1:
        same += 1
    if same < max(len(t) for t in tokens):
        for i in range(min(same, shortest - 1) - 1, head - 1, -1):
            if tokens[0][i].text in _KEY_ENDS:
                head = i + 1
                break
    tail = 0
    while tail < shortest - head and len({t[-1 - tail].text for t in tokens}) == 1 and tokens[0][-1 - tail].text in _CLOSERS:
        tail += 1
    return head, tail
