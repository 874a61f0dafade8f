"""The log header: the fields in front of each line's message, and where the message starts.

A format string names the header fields in angle brackets, Loghub-style::

    <Month> <Date> <Time> <Level> <Component>(\\[<PID>\\])?: <Content>

The text between placeholders is a regex fragment (hence ``\\[`` and ``(...)?``), except that a
run of spaces matches any run of whitespace: logs pad columns inconsistently. `LogFormat.parse`
compiles such a string once; `LogFormat.split` cuts a line into its header fields and its content.

When no format is given, `detect_format` infers one from a sample of lines, with no knowledge of
any particular system. Lines are cut into tokens at whitespace and "|" (a ``[...]`` group stays
whole). The header is the longest run of leading token positions on which ≥ 90 % of the lines
agree, by a small set of values (levels, hosts), a shape (``2015-10-18`` → ``9-9-9``), a frame
(``[...]``, ``...:``) or a "|" after them; cut back to the last position that looks like the end
of a header (``component:``, ``[thread]``, a lone ``-``, a "|", a level, a padded column). A last
field may instead span a few tokens up to a plain terminator (``chrome.exe *64 -``,
``syslogd 1.4.1:``); the widest header that enough lines fit wins.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from workhorse.errors import WorkhorseError

CONTENT = "Content"
_PLACEHOLDER = re.compile(r"<([A-Za-z_]\w*)>")
_SPACES = re.compile(r" +")


@dataclass(frozen=True)
class LogFormat:
    """A compiled header format; build it with `LogFormat.parse`.

    `fields` are the header fields in the order they appear, without ``Content``: exactly the keys
    of the dict that `split` returns.
    """

    spec: str
    fields: tuple[str, ...]
    pattern: re.Pattern[str] = field(repr=False, compare=False)

    @classmethod
    def parse(cls, spec: str) -> LogFormat:
        names = _PLACEHOLDER.findall(spec)
        if CONTENT not in names:
            raise WorkhorseError(
                f"log format {spec!r} has no <{CONTENT}> placeholder",
                hint="end the format with <Content>, the message after the header, "
                "e.g. '<Date> <Time> <Level> <Component>: <Content>'",
            )
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise WorkhorseError(
                f"log format {spec!r} names {', '.join(f'<{n}>' for n in repeated)} more than once",
                hint="give every header field its own name",
            )
        pieces = _PLACEHOLDER.split(spec)  # literal, name, literal, name, …, literal
        parts: list[str] = []
        for i, piece in enumerate(pieces):
            if i % 2 == 0:
                parts.append(_SPACES.sub(r"\\s+", piece))
            elif piece == CONTENT:
                parts.append(f"(?P<{piece}>.*)")
            elif i + 2 < len(pieces) and pieces[i + 1] and not pieces[i + 1].strip(" "):
                # Only spaces, then another field: the lazy match would end this field at its first
                # whitespace anyway (any longer split gives the next field the same end), so say so.
                # With `.*?` here, a long line that does not fit tries every way of cutting its words
                # among the fields: minutes for one 200-word line against "<A> <B> <C> <D> <E>: <Content>".
                parts.append(f"(?P<{piece}>\\S*?)")
            else:  # a header field stops as early as it can; Content takes the rest
                parts.append(f"(?P<{piece}>.*?)")
        try:
            pattern = re.compile("".join(parts))
        except re.error as e:
            raise WorkhorseError(
                f"log format {spec!r} is not a valid pattern: {e}",
                hint="the text between <Field> placeholders is a regular expression: "
                "escape literal brackets, parentheses, dots and pipes as \\[ \\( \\. \\|",
            ) from e
        return cls(spec=spec, fields=tuple(n for n in names if n != CONTENT), pattern=pattern)

    def split(self, line: str) -> tuple[dict[str, str], str] | None:
        """The header fields and the content of `line`, or None when the line does not fit the format.

        Whitespace around the line (and its line ending) is not part of the header or the content:
        it is invisible in every log viewer and reference labels drop it. A field inside an optional group that did
        not match (the ``(\\[<PID>\\])?`` of a line without a PID) is "".
        """
        match = self.pattern.fullmatch(line.strip())
        if match is None:
            return None
        header = match.groupdict("")  # the named groups in the format's order; "" for one that did not match
        content = header.pop(CONTENT)
        return header, content.rstrip()


# ------------------------------------------------------------------------------- detection

# Share of sample lines that must agree on every header position: a few lines of any real log are
# continuation lines (stack traces) or oddities, so demanding all of them would find no header.
_AGREEMENT = 0.9
# No real header has more tokens than this; the bound also keeps the generated regex cheap.
_MAX_HEADER_TOKENS = 12
# At most this many distinct words (and at most one per five sample lines) make a column of values,
# such as levels or host names, even when the words differ in shape.
_MAX_LOW_CARDINALITY = 10
# A header field of varying width ("chrome.exe" / "chrome.exe *64") spans at most this many tokens.
_MAX_SPAN = 3

# Generic vocabulary, tied to no system: what log levels, months and weekdays look like.
_LEVELS = frozenset(
    ("trace", "debug", "fine", "finer", "finest", "config", "verbose", "info", "information", "notice")
    + ("warn", "warning", "error", "err", "severe", "fatal", "critical", "crit", "alert", "emerg", "emergency")
    + ("panic",)
)
_MONTHS = frozenset(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec")
    + ("january", "february", "march", "april", "june", "july", "august", "september", "october")
    + ("november", "december")
)
_WEEKDAYS = frozenset(
    ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    + ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
)

_CLOSERS = {"[": "]", "(": ")", "<": ">", "{": "}"}
_DEPTH = {"[": 1, "]": -1}
_RUN = re.compile(r"[^\W\d_]+|\d+|.", re.DOTALL)
# Three numbers with one delimiter, not part of a longer chain (an IP address, a host "n-10-105-160").
_DATE = re.compile(r"(?<![-/.])9(?P<d>[-/.])9(?P=d)9(?![-/.]9)")
_TIME = re.compile(r"9:9")


@dataclass(frozen=True)
class _Token:
    text: str
    sep: str  # what follows: " " for whitespace, "|" for a pipe (spaces around it dropped), "" at the end
    wide: bool = False  # followed by a tab or several spaces: the padding of a column layout


def _tokenize(line: str) -> list[_Token]:
    """Split on whitespace and "|"; a "[...]" group (nesting allowed) stays one token even with spaces in it.

    Keeping brackets whole is what makes ``[Sun Dec 04 04:47:44 2005]`` or ``[IPC Server handler 5]``
    one header field instead of a varying number of tokens that would shift every later position.
    """
    tokens: list[_Token] = []
    n = len(line)
    i = 0
    while i < n and line[i].isspace():
        i += 1
    while i < n:
        start = i
        if line[i] == "[":
            depth = 0
            for j in range(i, n):
                depth += _DEPTH.get(line[j], 0)
                if depth == 0:
                    i = j + 1
                    break  # no matching "]": an ordinary token after all
        while i < n and not line[i].isspace() and line[i] != "|":
            i += 1
        text = line[start:i]
        sep_start = i
        while i < n and (line[i].isspace() or line[i] == "|"):
            i += 1
        raw_sep = line[sep_start:i]
        sep = "" if i == n else "".join(c for c in raw_sep if not c.isspace()) or " "
        wide = sep == " " and (len(raw_sep) > 1 or "\t" in raw_sep)
        if text:  # empty only for a line that starts with "|"
            tokens.append(_Token(text, sep, wide))
    return tokens


def _shape(text: str) -> str:
    """Letters and digits by class, punctuation as is: ``18:24:36,516`` → ``9:9:9,9``, ``[main]`` → ``[a]``."""
    out = []
    for run in _RUN.findall(text):
        if run.isdigit():
            out.append("9")
        elif run[0].isalpha():
            out.append("A" if run.isupper() else "a" if run.islower() else "Aa" if run.istitle() else "W")
        else:
            out.append(run)
    return "".join(out)


def _frame(text: str) -> tuple[str, str]:
    """The punctuation wrapped around a token's value: ``[main]`` → ("[", "]"), ``dfs.DataNode:`` → ("", ":")."""
    opener = text[:1]
    closer = _CLOSERS.get(opener)
    if closer is not None:
        end = text.rfind(closer)
        if end > 0 and all(c in ":,;" for c in text[end + 1 :]):
            return opener, text[end:]
    if len(text) > 1 and text[-1] in ":,;" and text[-2] not in ":,;":
        return "", text[-1]
    return "", ""


def _is_punct(text: str) -> bool:
    return not any(c.isalnum() for c in text)


def _looks_final(token: _Token) -> bool:
    """Whether a header could end right after this token, by its look.

    ``x:``, ``[x]``, a lone ``-``, ``x|``, a log level, or a token padded like a column.
    """
    if token.sep.strip() or token.wide or _is_punct(token.text):
        return True
    prefix, suffix = _frame(token.text)
    inner = token.text[len(prefix) : len(token.text) - len(suffix)]
    return suffix.startswith((":", "]", ")", ">")) or inner.lower() in _LEVELS


def _mostly(values: Sequence[str], test: Callable[[str], bool]) -> bool:
    return sum(1 for v in values if test(v)) >= _AGREEMENT * len(values)


@dataclass(frozen=True)
class _Column:
    """What the tokens at one position share: a few values, a shape, a frame, or only their separator."""

    kind: Literal["value", "shape", "frame", "any"]
    key: Any  # the value set, the shape string, the (opener, closer) frame, or None for "any"
    sep: str

    def matches(self, token: _Token) -> bool:
        if token.sep != self.sep:
            return False
        if self.kind == "value":
            return token.text in self.key
        if self.kind == "shape":
            return _shape(token.text) == self.key
        if self.kind == "frame":
            return _frame(token.text) == self.key
        return True


def _best_column(tokens: list[_Token], n_lines: int) -> tuple[int, _Column]:
    """The class that keeps the most tokens at one position, with how many it keeps.

    On a tie the more specific class wins (a value set, then a shape, then a frame): they describe
    the column better and name it better.
    """
    candidates: list[tuple[int, int, _Column]] = []
    limit = min(_MAX_LOW_CARDINALITY, max(2, n_lines // 5))
    by_value = Counter((t.text, t.sep) for t in tokens)
    for sep in {t.sep for t in tokens}:
        top = [(v, c) for (v, s), c in by_value.most_common() if s == sep][:limit]
        candidates.append((sum(c for _, c in top), 3, _Column("value", frozenset(v for v, _ in top), sep)))
    (shape, sep), count = Counter((_shape(t.text), t.sep) for t in tokens).most_common(1)[0]
    candidates.append((count, 2, _Column("shape", shape, sep)))
    frames = Counter((_frame(t.text), t.sep) for t in tokens if _frame(t.text) != ("", ""))
    if frames:
        (frame, sep), count = frames.most_common(1)[0]
        candidates.append((count, 1, _Column("frame", frame, sep)))
    # Any token at all, but only when a real separator ends it ("time|component|pid|message"):
    # after whitespace, "any token" would let the header run on into every message.
    seps = Counter(t.sep for t in tokens if t.sep.strip())
    if seps:
        sep, count = seps.most_common(1)[0]
        candidates.append((count, 0, _Column("any", None, sep)))
    count, _, column = max(candidates, key=lambda c: (c[0], c[1]))
    return count, column


@dataclass(frozen=True)
class _Part:
    """One piece of a detected header: a field (or a fixed punctuation token) and what follows it."""

    texts: tuple[str, ...]  # its value on each line that fits
    sep: str
    final: bool  # whether a header could end here (see _looks_final)


@dataclass(frozen=True)
class _Header:
    parts: tuple[_Part, ...]
    width: float  # mean number of tokens it takes from the lines that fit


def _agreed_columns(lines: list[list[_Token]], need: int) -> list[tuple[_Column, list[int]]]:
    """The longest run of leading positions on which `need` lines agree jointly, each with the lines left."""
    alive = list(range(len(lines)))
    steps: list[tuple[_Column, list[int]]] = []
    for pos in range(_MAX_HEADER_TOKENS):
        present = [j for j in alive if len(lines[j]) > pos]
        if len(present) < need:
            break
        count, column = _best_column([lines[j][pos] for j in present], len(lines))
        if count < need:
            break
        alive = [j for j in present if column.matches(lines[j][pos])]
        steps.append((column, alive))
    return steps


def _column_parts(lines: list[list[_Token]], steps: list[tuple[_Column, list[int]]], k: int) -> list[_Part]:
    parts = []
    for pos, (column, alive) in enumerate(steps[:k]):
        tokens = [lines[j][pos] for j in alive]
        final = sum(map(_looks_final, tokens)) >= _AGREEMENT * len(tokens)
        parts.append(_Part(tuple(t.text for t in tokens), column.sep, final))
    return parts


def _by_columns(lines: list[list[_Token]], steps: list[tuple[_Column, list[int]]]) -> _Header | None:
    """The agreed columns up to the last one a header could end with.

    Agreement alone overshoots when messages start alike (most lines "Received block …"); a header
    however ends in a recognisable way, so cut back to the last such column. With none, keep the
    columns up to the last one holding digits (a timestamp, a pid): a word after it is more likely
    the message's first word than a header field.
    """
    parts = _column_parts(lines, steps, len(steps))
    final = [i for i, p in enumerate(parts) if p.final]
    digits = [i for i, p in enumerate(parts) if _mostly(p.texts, lambda t: any(c.isdigit() for c in t))]
    cut = final[-1] + 1 if final else digits[-1] + 1 if digits else 0
    if cut == 0:
        return None
    return _Header(tuple(parts[:cut]), float(cut))


def _by_span(lines: list[list[_Token]], steps: list[tuple[_Column, list[int]]], k: int, need: int) -> _Header | None:
    """The first `k` agreed columns, then one field of 1..3 tokens that ends the header at a terminator.

    The terminator is either the field's own trailing ":" (``syslogd 1.4.1:``) or a lone punctuation
    token after it (``chrome.exe *64 -``): the field has no fixed width, but its end is plain.
    """
    alive = steps[k - 1][1] if k else list(range(len(lines)))
    ends: dict[int, tuple[int, str]] = {}  # line → (index of the terminator token, what ends it)
    for j in alive:
        tokens = lines[j]
        for i in range(k, min(k + _MAX_SPAN + 1, len(tokens))):
            token = tokens[i]
            if not token.sep or (i > k and tokens[i - 1].sep != " "):
                break  # nothing left for the content, or a field does not span a "|"
            if _is_punct(token.text):
                if i > k:
                    ends[j] = (i, token.text)
                break
            if token.text.endswith(":") and i < k + _MAX_SPAN:
                ends[j] = (i, ":")
                break
    if not ends:
        return None
    terminator, count = Counter(end for _, end in ends.values()).most_common(1)[0]
    if count < need:
        return None
    fit = [j for j in alive if j in ends and ends[j][1] == terminator]
    last_sep = Counter(lines[j][ends[j][0]].sep for j in fit).most_common(1)[0][0]
    parts = _column_parts(lines, steps, k)
    if terminator == ":":
        texts = tuple(" ".join(t.text for t in lines[j][k : ends[j][0] + 1]) for j in fit)
        parts.append(_Part(texts, last_sep, True))
    else:
        texts = tuple(" ".join(t.text for t in lines[j][k : ends[j][0]]) for j in fit)
        parts += [_Part(texts, " ", False), _Part((terminator,), last_sep, True)]
    width = sum(ends[j][0] + 1 for j in fit) / len(fit)
    return _Header(tuple(parts), width)


def _name(values: Sequence[str]) -> str:
    """A field name from what the values look like; "" when nothing stands out."""
    lowered = [v.lower() for v in values]
    for name, vocabulary in (("Level", _LEVELS), ("Month", _MONTHS), ("Weekday", _WEEKDAYS)):
        if _mostly(lowered, vocabulary.__contains__):
            return name
    shapes = [_shape(v) for v in values]
    has_date = _mostly(shapes, lambda s: _DATE.search(s) is not None)
    has_time = _mostly(shapes, lambda s: _TIME.search(s) is not None)
    return "Timestamp" if has_date and has_time else "Date" if has_date else "Time" if has_time else ""


_SPECIAL = frozenset(".^$*+?{}[]\\|()")


def _literal(text: str) -> str:
    """Text for the format string: regex metacharacters escaped, the rest (spaces included) as is."""
    return "".join("\\" + c if c in _SPECIAL else c for c in text)


def _separator(sep: str) -> str:
    # A pipe may have spaces before it (absorbed here) and after it (left to the next field or the
    # content: reference labels keep a message's leading space after "|").
    return " " if sep == " " else r"\s*" + _literal(sep)


def _spec(header: _Header) -> str:
    out: list[str] = []
    used: Counter[str] = Counter()
    for i, part in enumerate(header.parts, start=1):
        if len(set(part.texts)) == 1 and _is_punct(part.texts[0]):
            out.append(_literal(part.texts[0]))  # a fixed "-" or "::" is layout, not a field
        else:
            prefix, suffix = frame = Counter(_frame(t) for t in part.texts).most_common(1)[0][0]
            inner = [t[len(prefix) : len(t) - len(suffix)] for t in part.texts if _frame(t) == frame]
            name = _name(inner) or f"Field{i}"
            used[name] += 1
            if used[name] > 1:
                name = f"{name}{used[name]}"
            out.append(f"{_literal(prefix)}<{name}>{_literal(suffix)}")
        out.append(_separator(part.sep))
    return "".join(out) + f"<{CONTENT}>"


def detect_format(sample: Sequence[str]) -> LogFormat | None:
    """Infer the header format of a log from a sample of its lines (a few hundred is plenty).

    Knows no particular system (see the module docstring for how it works). Field names are
    generic (``Field1``…) unless the values make them plain (``Level``, ``Month``, ``Date``,
    ``Time``…). Returns None when the lines share no header, e.g. bare messages or a mix of formats.
    """
    texts = [line.rstrip() for line in sample if line.strip()]
    # Indented lines continue the entry above (stack traces, wrapped messages) and carry no header;
    # in a Java log they can be a third of all lines, enough to sink any agreement.
    flush = [line for line in texts if not line[0].isspace()]
    if len(flush) >= len(texts) / 2:
        texts = flush
    lines = [_tokenize(line) for line in texts]
    if not lines:
        return None
    need = math.ceil(_AGREEMENT * len(lines))
    steps = _agreed_columns(lines, need)
    options = [_by_columns(lines, steps)] + [_by_span(lines, steps, k, need) for k in range(len(steps) + 1)]
    found = [h for h in options if h is not None]
    if not found:
        return None
    # The widest header that enough lines fit; on a tie the one with more fields, since a span that
    # starts early ("combo sshd[42]:" as one field) fits exactly the lines that one starting later does.
    best = max(found, key=lambda h: (h.width, len(h.parts)))
    return LogFormat.parse(_spec(best))
