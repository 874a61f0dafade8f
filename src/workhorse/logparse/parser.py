"""Raw log lines in, one JSON-ready record per line out: header fields, template, typed parameters.

    parser = LogParser(LogFormat.parse("<Date> <Time> <Level> <Component>: <Content>"), TemplateCache(), model)
    for parsed in parser.parse(lines):
        record = parsed.record(parser.cache)

A line whose content matches a cached template is parsed by the cache alone (source "cache").
Otherwise the line's template is learnt (source "model", with or without a model): the model writes
it when there is one and the content is at most `MAX_MODEL_CHARS` long, and its answer (with the
plain words in long runs of wildcards taken back) is kept when it matches the line and keeps a word
of it, if the line has one; else (no model, a longer line, an answer cut short or without words, a
model error) the template is the line with only its certain variables abstracted (`template.chunk`:
numbers, hex values, ids, booleans, paths, addresses, host names, timestamps, UUIDs). That
template is joined with the cached ones it is the same event as (`refine.join`) and cached
(`TemplateCache.add`), which may hand back a cached template that covers it instead. The line's
parameters are what its template's match gives: empty in the rare case it does not parse the line
(a cached template of the same text whose wildcard spans no space where this line has one, or a
match past its cap).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from workhorse.errors import WorkhorseError
from workhorse.logparse.cache import TemplateCache
from workhorse.logparse.header import LogFormat
from workhorse.logparse.model import TemplateModel
from workhorse.logparse.refine import join
from workhorse.logparse.template import (
    Template,
    chunk,
    keep_words_in_wildcard_runs,
    normalize,
    template_from_choices,
)
from workhorse.logparse.types import param_type

log = logging.getLogger(__name__)
# Longer contents (lists of ids, dumps) get their certain variables without the model: a decision
# per chunk would take seconds, and such lines rarely share a template with a fixed length anyway.
MAX_MODEL_CHARS = 600


@dataclass
class ParsedLine:
    number: int  # 1-based position in the input
    header: dict[str, str]
    content: str  # normalized
    template_id: int
    source: str  # "cache" | "model"
    params: list[str]
    fits_format: bool = True
    template: Template | None = field(default=None, repr=False)  # as parsed: it names the line's group once evicted

    def record(self, cache: TemplateCache) -> dict[str, Any]:
        template = cache.get(self.template_id) or self.template  # the live one: it may have been generalized since
        if template is None:
            raise KeyError(self.template_id)
        return {
            "line": self.number,
            **({"header": self.header} if self.header else {}),
            "content": self.content,
            "template_id": template.id,
            "template": template.text,
            "params": [{"value": v, "type": param_type(v)} for v in self.params],
            "source": self.source,
            **({} if self.fits_format else {"fits_format": False}),
        }


class LogParser:
    def __init__(
        self,
        log_format: LogFormat | None,
        cache: TemplateCache,
        model: TemplateModel | Callable[[], TemplateModel] | None,
        *,
        on_learn: Callable[[Template], None] | None = None,
    ) -> None:
        """`model`: a TemplateModel, a function that opens one on the first cache miss, or None
        (the cache alone). `on_learn` is called with each template the model adds."""
        self.log_format = log_format
        self.cache = cache
        self._model = model
        self._on_learn = on_learn
        self.lines = 0
        self.unfit = 0  # lines that did not fit the header format (parsed whole)
        self.model_failures = 0  # lines the model failed on (they get their certain variables)

    def parse(self, lines: Iterable[str]) -> Iterator[ParsedLine]:
        for line in lines:
            yield self.parse_line(line.rstrip("\r\n"))

    def parse_line(self, line: str) -> ParsedLine:
        self.lines += 1
        header: dict[str, str] = {}
        content, fits = line, True
        if self.log_format is not None:
            split = self.log_format.split(line)
            if split is None:
                self.unfit += 1
                fits = False
            else:
                header, content = split
        content = normalize(content)
        found = self.cache.match(content)
        if found is not None:
            template, params = found
            return ParsedLine(self.lines, header, content, template.id, "cache", params, fits, template)
        template = self._learn(content)
        if self._on_learn is not None:
            self._on_learn(template)
        params = template.match(content) or []
        return ParsedLine(self.lines, header, content, template.id, "model", params, fits, template)

    @property
    def model_calls(self) -> int:
        return self._model.calls if isinstance(self._model, TemplateModel) else 0

    @property
    def model(self) -> TemplateModel | None:
        if self._model is not None and not isinstance(self._model, TemplateModel):
            self._model = self._model()
        return self._model

    def _learn(self, content: str) -> Template:
        text = None
        model = self.model if len(content) <= MAX_MODEL_CHARS else None
        if model is not None:
            try:
                [text] = model.templates([content], list(self.cache))
                text = keep_words_in_wildcard_runs(text, content)
            except WorkhorseError as error:  # one line the model cannot take must not end the run
                self.model_failures += 1
                log.warning("no template from the model for %r: %s", content[:80], error)
            if text is not None and (Template(text, example=content).match(content) is None or _degenerate(text, content)):
                text = None
        if text is None:
            chunks = chunk(content)
            text = template_from_choices(chunks, [c.variable for c in chunks])
        new = join(Template(text, example=content), self.cache.related(text))
        return self.cache.add(new.text, content, new.spanning)


def _degenerate(template: str, content: str) -> bool:
    """A template that keeps none of the line's words (`<*> <*> <*>`) would swallow unrelated lines."""
    has_words = any(c.kind == "word" and not c.variable and any(ch.isalpha() for ch in c.text) for c in chunk(content))
    kept = any(c.kind == "word" and any(ch.isalpha() for ch in c.text) for c in chunk(template))  # `<*>` cuts into punctuation
    return has_words and not kept

