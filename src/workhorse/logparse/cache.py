"""The template cache: lines of a known template are parsed without the model.

Templates are indexed by their first literal word, so a line is tried against the few templates
that start like it (and those that start with a variable). When several match, the one with the
most literal text wins: the most specific explanation of the line.

A new template that generalizes cached ones (`Invalid user <*> from <*>` after
`Invalid user admin from <*>`) replaces them; the replaced ids stay valid as aliases, so lines
already parsed under them end up in the same group.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from workhorse.errors import WorkhorseError
from workhorse.logparse.template import Template, first_word

CACHE_VERSION = 1


class TemplateCache:
    def __init__(self) -> None:
        self._templates: dict[int, Template] = {}  # live templates by id
        self._by_word: dict[str | None, list[Template]] = defaultdict(list)
        self._alias: dict[int, int] = {}  # replaced id → the id that replaced it
        self._next_id = 1
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._templates)

    def __iter__(self) -> Iterator[Template]:
        return iter(self._templates.values())

    def match(self, content: str) -> tuple[Template, list[str]] | None:
        """The best template for a (normalized) content and its parameter values."""
        best: tuple[Template, list[str]] | None = None
        for key in {first_word(content), None}:
            for template in self._by_word.get(key, ()):
                if best is not None and template.literal_chars <= best[0].literal_chars:
                    continue
                params = template.match(content)
                if params is not None:
                    best = (template, params)
        if best is None:
            self.misses += 1
        else:
            self.hits += 1
            best[0].hits += 1
        return best

    def add(self, text: str, example: str, spanning: frozenset[int] = frozenset()) -> Template:
        """Cache a template made for `example`; it replaces the cached templates it generalizes.
        A template already cached (or one a cached template generalizes) is returned as is."""
        new = Template(text, id=self._next_id, example=example, spanning=spanning)
        for template in self._templates.values():
            if template.text == text or template.generalizes(new):
                return template
        self._next_id += 1
        for old in [t for t in self._templates.values() if new.generalizes(t)]:
            self._remove(old)
            self._alias[old.id] = new.id
            new.hits += old.hits
        self._templates[new.id] = new
        self._by_word[new.first_word].append(new)
        return new

    def related(self, text: str) -> list[Template]:
        """Cached templates that start like `text` (the same first word, or both a wildcard):
        the ones a new template may be the same event as (`refine`)."""
        return list(self._by_word.get(first_word(text), ()))

    def resolve(self, template_id: int) -> Template:
        """The live template behind an id, following replacements."""
        while template_id in self._alias:
            template_id = self._alias[template_id]
        return self._templates[template_id]

    def _remove(self, template: Template) -> None:
        del self._templates[template.id]
        self._by_word[template.first_word].remove(template)

    # -- persistence ------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Write atomically (a crash leaves the previous file)."""
        data = {
            "version": CACHE_VERSION,
            "next_id": self._next_id,
            "templates": [
                {"id": t.id, "text": t.text, "example": t.example, "hits": t.hits, "spanning": sorted(t.spanning)}
                for t in self._templates.values()
            ],
            "aliases": {str(k): v for k, v in self._alias.items()},
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, scratch = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(data, out, ensure_ascii=False, indent=1)
        os.replace(scratch, path)

    @classmethod
    def load(cls, path: Path) -> TemplateCache:
        cache = cls()
        if not path.is_file():
            return cache
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("version") != CACHE_VERSION:
                raise ValueError(f"version {data.get('version')!r}, expected {CACHE_VERSION}")
            for row in data["templates"]:
                template = Template(row["text"], id=int(row["id"]), example=row.get("example", ""), hits=int(row.get("hits", 0)),
                                    spanning=frozenset(int(i) for i in row.get("spanning", ())))
                cache._templates[template.id] = template
                cache._by_word[template.first_word].append(template)
            cache._alias = {int(k): int(v) for k, v in data.get("aliases", {}).items()}
            cache._next_id = int(data["next_id"])
        except (ValueError, KeyError, TypeError) as error:
            raise WorkhorseError(f"the template cache {path} is unreadable: {error}",
                                 "delete it to start from an empty cache (templates are learnt again)") from None
        return cache
