"""The template cache: lines of a known template are parsed without the model.

Templates are indexed by their first and last literal words and their spaces, so a line is tried
against the few templates that start and end like it (or with a variable there) and have as many
spaces as it has: a wildcard covers no space, unless it is one of the few that span (those are
tried whatever the line's spaces). When several match, the one with the most literal text wins:
the most specific explanation of the line.

A new template that generalizes cached ones (`Invalid user <*> from <*>` after
`Invalid user admin from <*>`) replaces them; the replaced ids stay valid as aliases, so lines
already parsed under them end up in the same group.

The cache holds at most `max_templates` templates (`MAX_TEMPLATES` unless told otherwise): every
template starting with a variable is tried on every line, and the file is rewritten after each new
template, so neither may grow without end on a log that never repeats itself. Past the bound the
least recently matched template (or added, for one never matched) goes, with the aliases that led
to it; its lines are learnt again if they come back.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import tempfile
from collections import OrderedDict, defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from workhorse.errors import WorkhorseError
from workhorse.logparse.template import Template, first_word, last_word

log = logging.getLogger(__name__)

CACHE_VERSION = 1
# Loghub-2k's systems have 6 to 341 templates in 2,000 lines each; ten thousand leaves room for a
# large system's whole log while keeping a line's wildcard-first candidates and the file bounded.
MAX_TEMPLATES = 10_000
# Values the lines' groups showed (package names, versions): bounded, the oldest forgotten first,
# so a log that never repeats a value cannot grow the cache or its file without end.
MAX_VALUES = 20_000
# Lines' (first word, last word, spaces) whose candidate templates are remembered: past this many
# (a log whose lines start with ever new words) the memory starts again.
MAX_LINE_KEYS = 4096


class TemplateCache:
    def __init__(self, max_templates: int = MAX_TEMPLATES) -> None:
        if max_templates < 1:
            raise ValueError(f"max_templates must be at least 1, not {max_templates}")
        self.max_templates = max_templates
        self._templates: dict[int, Template] = {}  # live templates by id, in the order they were added
        self._by_word: dict[str | None, list[Template]] = defaultdict(list)
        # the same templates for matching, by first word, last word and spaces (None: a wildcard spans spaces)
        self._index: dict[tuple[str | None, str | None, int | None], list[Template]] = defaultdict(list)
        # `_candidates` by a line's first word, last word and spaces; emptied when a template comes or goes
        self._by_line_key: dict[tuple[str | None, str | None, int], tuple[Template, ...]] = {}
        self._recent: OrderedDict[int, None] = OrderedDict()  # live ids, least recently matched first
        self._alias: dict[int, int] = {}  # replaced id → the id that replaced it
        self._next_id = 1
        # tokens that groups of lines showed to be values (`grouping`), oldest first: a value wherever they turn up
        self.values: dict[str, None] = {}
        self.hits = 0
        self.misses = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._templates)

    def __iter__(self) -> Iterator[Template]:
        return iter(self._templates.values())

    def match(self, content: str, count: bool = True) -> tuple[Template, list[str]] | None:
        """The best template for a (normalized) content and its parameter values. On a tie in
        literal text the first found wins, in `_candidates`' order, each list in the order its
        templates were added. `count` False: the line is counted later (`tally`)."""
        best: tuple[Template, list[str]] | None = None
        tokens = content.split(" ")
        for template in self._candidates(content, len(tokens) - 1):
            if best is not None and template.literal_chars <= best[0].literal_chars:
                continue
            params = template.match_tokens(content, tokens)
            if params is not None:
                best = (template, params)
        if best is None:
            self.misses += count
        else:
            self.hits += count
            best[0].hits += 1
            self._recent.move_to_end(best[0].id)
        return best

    def _candidates(self, content: str, spaces: int) -> tuple[Template, ...]:
        """The templates that may match `content`: those that start with its first word before
        those that start with a variable; of each, those without a spanning wildcard before those
        with one; of each, those that end with its last word before those that end with a
        variable. Remembered per first word, last word and spaces until the cache changes."""
        key = (first_word(content), last_word(content), spaces)
        found = self._by_line_key.get(key)
        if found is None:
            if len(self._by_line_key) >= MAX_LINE_KEYS:
                self._by_line_key.clear()
            found = self._by_line_key[key] = tuple(itertools.chain.from_iterable(self._lists(*key)))
        return found

    def _lists(self, first: str | None, last: str | None, spaces: int) -> Iterator[list[Template]]:
        index = self._index
        for start in (first, None) if first is not None else (None,):
            for count in (spaces, None):
                if last is not None and (found := index.get((start, last, count))):
                    yield found
                if found := index.get((start, None, count)):
                    yield found

    def remember(self, values: Iterable[str]) -> bool:
        """Keep values that hold a digit or punctuation (`libsqlite36:amd64`, `1:2.38.1-5+b6`); a
        plain word can be a value in one event and a word of another (a user named `user`, and
        `Invalid user <*>`). Whether any was new."""
        new = False
        for value in values:
            if value and not value.isalpha() and value not in self.values:
                self.values[value] = None
                new = True
        while len(self.values) > MAX_VALUES:
            del self.values[next(iter(self.values))]
        return new

    def tally(self, *, hits: int, misses: int) -> None:
        """Count lines matched with `count=False` once it is known which were parsed by a known
        template (a block's lines: `LogParser.parse_block`)."""
        self.hits += hits
        self.misses += misses

    def add(self, text: str, example: str, spanning: frozenset[int] = frozenset()) -> Template:
        """Cache a template made for `example`; it replaces the cached templates it generalizes.
        A template already cached (or one a cached template generalizes) is returned as is."""
        new = Template(text, id=self._next_id, example=example, spanning=spanning)
        for template in self._templates.values():
            if template.text == text or template.generalizes(new):
                self._recent.move_to_end(template.id)
                return template
        self._next_id += 1
        for old in [t for t in self._templates.values() if new.generalizes(t)]:
            self._remove(old)
            for alias, target in self._alias.items():  # one hop from any replaced id to a live one
                if target == old.id:
                    self._alias[alias] = new.id
            self._alias[old.id] = new.id
            new.hits += old.hits
        self._insert(new)
        self._evict_beyond(self.max_templates)
        return new

    def related(self, text: str) -> list[Template]:
        """Cached templates that start like `text` (the same first word, or both a wildcard):
        the ones a new template may be the same event as (`refine`)."""
        return list(self._by_word.get(first_word(text), ()))

    def resolve(self, template_id: int) -> Template:
        """The live template behind an id, following replacements (KeyError once evicted)."""
        found = self.get(template_id)
        if found is None:
            raise KeyError(template_id)
        return found

    def get(self, template_id: int) -> Template | None:
        """The live template behind an id, following replacements, or None once evicted."""
        return self._templates.get(self._alias.get(template_id, template_id))  # aliases are one hop

    def _insert(self, template: Template) -> None:
        self._templates[template.id] = template
        self._by_word[template.first_word].append(template)
        self._index_of(template).append(template)
        self._by_line_key.clear()
        self._recent[template.id] = None

    def _remove(self, template: Template) -> None:
        del self._templates[template.id]
        del self._recent[template.id]
        self._by_word[template.first_word].remove(template)
        self._index_of(template).remove(template)
        self._by_line_key.clear()

    def _index_of(self, template: Template) -> list[Template]:
        """The list of `match`'s index that holds the template."""
        return self._index[(template.first_word, template.last_word, template.spaces)]

    def _evict_beyond(self, limit: int) -> None:
        while len(self._templates) > limit:
            oldest = self._templates[next(iter(self._recent))]
            self._remove(oldest)
            self._alias = {alias: target for alias, target in self._alias.items() if target != oldest.id}
            self.evicted += 1
            log.info("template cache full (%d): evicted template %d, %r", limit, oldest.id, oldest.text[:80])

    # -- persistence ------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Write atomically and durably: a crash leaves the previous file or the new one, whole."""
        data = {
            "version": CACHE_VERSION,
            "next_id": self._next_id,
            "templates": [
                {"id": t.id, "text": t.text, "example": t.example, "hits": t.hits, "spanning": sorted(t.spanning)}
                for t in self._templates.values()
            ],
            "recent": list(self._recent),  # least recently matched first: what goes first past the bound
            "aliases": {str(k): v for k, v in self._alias.items()},
            "values": list(self.values),
        }
        _write_durably(path, json.dumps(data, ensure_ascii=False, indent=1))

    @classmethod
    def load(cls, path: Path, max_templates: int = MAX_TEMPLATES) -> TemplateCache:
        """The cache saved at `path` (an empty one when there is no file). Beyond `max_templates`,
        the least recently matched templates are left out."""
        cache = cls(max_templates)
        if not path.is_file():
            return cache
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            _fill(cache, data)
        except (OSError, ValueError, TypeError) as error:  # JSON and UTF-8 errors are ValueErrors
            raise WorkhorseError(
                f"the template cache {path} is unreadable: {error}",
                f"delete {path} (or move it aside) to start from an empty cache; its templates are learnt again",
            ) from None
        cache._evict_beyond(max_templates)
        return cache


def _fill(cache: TemplateCache, data: Any) -> None:
    """Put a cache file's contents (parsed JSON) into an empty cache; ValueError or TypeError
    naming what is wrong."""
    if not isinstance(data, dict):
        raise TypeError(f"its top level is a JSON {_json_kind(data)}, not an object with version, templates and aliases")
    if data.get("version") != CACHE_VERSION:
        raise ValueError(f"version {data.get('version')!r}, expected {CACHE_VERSION}")
    rows = _field(data, "templates", list)
    for number, row in enumerate(rows, start=1):
        template = _template(row, number)
        if template.id in cache._templates:
            raise ValueError(f"template {number}: id {template.id} is used twice")
        cache._insert(template)
    aliases = {_integer(k, "an alias"): _integer(v, "an alias") for k, v in _field(data, "aliases", dict, {}).items()}
    cache._alias = {alias: _final(alias, aliases) for alias in aliases}
    next_id = _integer(_field(data, "next_id", int), "next_id")
    cache._next_id = max([next_id, *(i + 1 for i in cache._templates)])  # never hand out an id in use
    values = _field(data, "values", list, [])  # files written before values were kept have none
    if not all(isinstance(v, str) for v in values):
        raise TypeError('"values" holds something other than strings')
    cache.values = dict.fromkeys(values)
    recent = [_integer(i, "recent") for i in _field(data, "recent", list, [])]
    for template_id in recent:  # files without it (or with stale ids) keep the file's order
        if template_id in cache._recent:
            cache._recent.move_to_end(template_id)


def _final(template_id: int, aliases: dict[int, int]) -> int:
    """Where a chain of replacements ends (files written before aliases were kept one hop long)."""
    seen = {template_id}
    while template_id in aliases:
        template_id = aliases[template_id]
        if template_id in seen:
            raise ValueError(f"aliases loop through template {template_id}")
        seen.add(template_id)
    return template_id


def _template(row: Any, number: int) -> Template:
    if not isinstance(row, dict):
        raise TypeError(f"template {number} is a JSON {_json_kind(row)}, not an object")
    try:
        text, example = _field(row, "text", str), _field(row, "example", str, "")
        spanning = frozenset(_integer(i, "spanning") for i in _field(row, "spanning", list, []))
        return Template(text, id=_integer(_field(row, "id", int), "id"), example=example,
                        hits=_integer(_field(row, "hits", int, 0), "hits"), spanning=spanning)
    except (ValueError, TypeError) as error:
        raise type(error)(f"template {number}: {error}") from None


_REQUIRED = object()


def _field(data: dict[str, Any], name: str, kind: type, default: Any = _REQUIRED) -> Any:
    if name not in data:
        if default is _REQUIRED:
            raise ValueError(f'"{name}" is missing')
        return default
    value = data[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f'"{name}" is a JSON {_json_kind(value)}, not {_json_kind(kind())}')
    return value


def _integer(value: Any, name: str) -> int:
    """An int, or a string of one (JSON object keys are strings)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError(f"{name} {value!r} is not an integer")
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name} {value!r} is not an integer") from None


def _json_kind(value: Any) -> str:
    kinds = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number", type(None): "null"}
    return kinds.get(type(value), type(value).__name__)


def _write_durably(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, flush it to disk, rename it over `path`, then
    flush the directory so the rename itself survives a power cut. The temporary file is removed
    when anything fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, scratch = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(scratch, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(scratch)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    """Flush a directory's entries. Windows cannot open a directory for this (and its renames need
    no such step), so there it is skipped."""
    try:
        descriptor = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        if os.name == "nt":
            return
        raise
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
