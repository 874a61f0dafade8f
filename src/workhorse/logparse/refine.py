"""Refining a template when a new line of the same event conflicts with a cached one.

Two ways a small model splits one event over two templates, and how they are joined again:

- **Siblings**: templates that differ in one word, a value the model kept as a word
  (`Invalid user admin from <*>`, `Invalid user test from <*>`, `Invalid user oracle from <*>`),
  or in one run of chunks inside a token (a job named `icloud.fmfd.heartbeat`, then
  `suggestions.harvest`). That place becomes `<*>` once three different values were seen there:
  two may still be two events (`Failed password for …` and `Failed none for …`; `failure` and `failures`).
- **Value phrases**: the two differ in the shape of a value, `0 bytes sent` against
  `1190 bytes (1.16 KB) sent`, or `lifetime 00:01` against `lifetime <1 sec`. A value whose
  shape varies between lines of one event is one variable spanning spaces, with its units:
  `<*> sent`, `lifetime <*>` (the Loghub labels fold such values the same way).

Both need enough words in common that the two are plainly one event; names (`… HTTPS` and
`… SOCKS5`) never join as siblings.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from difflib import SequenceMatcher

from workhorse.logparse.template import (
    WILDCARD,
    Template,
    chunk,
    render,
    spanning_in,
    template_pieces,
)

SHARED_WORDS = 3  # words two templates must share, besides where they differ, to join
SIBLINGS = 3  # different words seen in one place before that place is a value


@dataclass(frozen=True)
class Joining:
    """The thresholds of the two joins (parameters, for leave-one-system-out checks: `bench logs --loso`)."""

    shared_words: int = SHARED_WORDS
    siblings: int = SIBLINGS


JOINING = Joining()
# Templates longer than this (in tokens) are never value phrases: their token-by-token comparison
# (`SequenceMatcher`) takes time quadratic in their length, so one long line would stall the parser.
# On Loghub-2k the longest template has 105 tokens.
MAX_PHRASE_TOKENS = 256


def join(new: Template, related: Iterable[Template], joining: Joining = JOINING) -> Template:
    """`new`, or its join with the cached templates it is the same event as."""
    siblings: Counter[str] = Counter()
    for cached in related:
        phrase = merge_phrases(new, cached, joining.shared_words)
        if phrase is not None:
            return phrase
        sibling = merge_siblings(new, cached, joining.shared_words)
        if sibling is not None:
            siblings[sibling.text] += 1
            if siblings[sibling.text] >= joining.siblings - 1:
                return sibling
    return new


def merge_siblings(new: Template, old: Template, shared_words: int = SHARED_WORDS) -> Template | None:
    """The join of two templates that differ in one run of chunks inside one token, not at their
    start: a word (`Invalid user <*> from <*>`), or the part of a dotted name after the prefix they
    share (`com.apple.<*>: …` from `com.apple.icloud.fmfd.heartbeat: …` and
    `com.apple.suggestions.harvest: …`); or None (`join` applies it once there are enough siblings)."""
    tokens, others = new.text.split(" "), old.text.split(" ")
    if len(tokens) != len(others):
        return None
    differing = [i for i, (x, y) in enumerate(zip(tokens, others)) if x != y]
    if len(differing) != 1:
        return None
    at = differing[0]
    mine, theirs = template_pieces(tokens[at]), template_pieces(others[at])
    start = next((i for i, (x, y) in enumerate(zip(mine, theirs)) if x != y), min(len(mine), len(theirs)))
    end = next((i for i, (x, y) in enumerate(zip(reversed(mine[start:]), reversed(theirs[start:]))) if x != y),
               min(len(mine), len(theirs)) - start)
    a, b = mine[start:len(mine) - end], theirs[start:len(theirs) - end]
    if (at == 0 and start == 0) or not a or not b or WILDCARD in a + b or not (a[0][0].isalnum() and b[0][0].isalnum()):
        return None
    if len(a) == len(b) == 1 and any(c.constant for c in chunk(a[0]) + chunk(b[0])):
        return None  # a name (`HTTPS`, `SOCKS5`); a dotted one that varies (`Safari.SafeBrowsing.Update`) is a value
    if _words(template_pieces(new.text)) - _words(a) < shared_words:
        return None
    tokens[at] = "".join([*mine[:start], WILDCARD, *mine[len(mine) - end:]])
    text = render([" ".join(tokens)])
    return _checked(Template(text, example=new.example, spanning=spanning_in(text, old.example)), new, old)


def _words(pieces: Iterable[str]) -> int:
    return sum(1 for p in pieces if p.strip() and p != WILDCARD and p[0].isalnum())


def merge_phrases(new: Template, old: Template, shared_words: int = SHARED_WORDS) -> Template | None:
    """The join of two templates that differ only where a value's shape varies, or None.

    Templates are compared token by token (split at spaces). Where they differ, each side must be
    a value phrase: wildcards and units, each unit word right after a wildcard (`(<*> KB)`,
    `<<*> sec`), and one side at least must hold a wildcard or be a lone unit word after a value;
    `invalid user <*>` against `<*>` is a different event, not a value phrase. Where one side is
    empty, the phrase takes in the value before it (`<*>`, or `<*> bytes`), so that the join
    still parses both."""
    a, b = new.text.split(" "), old.text.split(" ")
    if a[0] != b[0] or max(len(a), len(b)) > MAX_PHRASE_TOKENS:
        return None
    a_spans, b_spans = _token_spans(new), _token_spans(old)
    tokens: list[str] = []
    spans: list[tuple[bool, ...]] = []
    shared = 0
    for tag, i1, i2, j1, j2 in SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag == "equal":
            for i, j in zip(range(i1, i2), range(j1, j2), strict=True):
                tokens.append(a[i])
                spans.append(tuple(x or y for x, y in zip(a_spans[i], b_spans[j], strict=True)))
                shared += _is_word(a[i])
            continue
        side_a, side_b = a[i1:i2], b[j1:j2]
        previous = tokens[-1] if tokens else ""
        if not any(WILDCARD in t for t in side_a + side_b) and not _unit_alone(side_a + side_b, previous):
            return None
        if not (_value_phrase(side_a, previous) and _value_phrase(side_b, previous)):
            return None
        if not side_a or not side_b:
            taken = _value_before(tokens)
            if not taken:
                return None
            shared -= sum(_is_word(t) for t in tokens[-taken:])
            del tokens[-taken:], spans[-taken:]
        tokens.append(WILDCARD)
        spans.append((True,))
    if shared < shared_words:
        return None
    spanning = frozenset(i for i, flag in enumerate(f for token_spans in spans for f in token_spans) if flag)
    return _checked(Template(" ".join(tokens), example=new.example, spanning=spanning), new, old)


def _value_phrase(side: list[str], previous: str) -> bool:
    """Wildcards and units only: each word right after a wildcard, punctuation between allowed
    (`(<*> KB)`, `<<*> sec`; not `LOGIN(uid=<*>)`)."""
    after_value = _ends_with_value(previous)
    for piece in template_pieces(" ".join(side)):
        if piece == WILDCARD:
            after_value = True
        elif piece[0].isalnum():
            if not after_value:
                return False
            after_value = False
    return True


def _ends_with_value(token: str) -> bool:
    """Whether the last word or wildcard in `token` is a wildcard."""
    last = [p for p in template_pieces(token) if p == WILDCARD or p[0].isalnum()]
    return bool(last) and last[-1] == WILDCARD


def _unit_alone(tokens: list[str], previous: str) -> bool:
    """A unit word written after a value on one side only (`lifetime <*> sec`, `lifetime <*>`)."""
    return previous == WILDCARD and len(tokens) == 1 and tokens[0].isalpha()


def _value_before(tokens: list[str]) -> int:
    """How many tokens at the end of `tokens` are a value the phrase after it belongs to:
    `<*>` (1), a value and its unit `<*> bytes` (2), or none (0)."""
    if tokens and tokens[-1] == WILDCARD:
        return 1
    if len(tokens) >= 2 and tokens[-2] == WILDCARD and _is_word(tokens[-1]):
        return 2
    return 0


def _is_word(token: str) -> bool:
    return WILDCARD not in token and any(ch.isalpha() for ch in token)


def _token_spans(template: Template) -> list[tuple[bool, ...]]:
    """Per space-separated token of the template, whether each of its wildcards spans spaces."""
    out, index = [], 0
    for token in template.text.split(" "):
        n = token.count(WILDCARD)
        out.append(tuple(i in template.spanning for i in range(index, index + n)))
        index += n
    return out


def _checked(joined: Template, new: Template, old: Template) -> Template | None:
    """The join when it parses both templates' lines."""
    if joined.match(new.example) is None or not (joined.generalizes(old) or joined.text == old.text):
        return None
    return joined
