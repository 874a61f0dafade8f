"""Raw log lines in, one JSON-ready record per line out: header fields, template, typed parameters.

    parser = LogParser(LogFormat.parse("<Date> <Time> <Level> <Component>: <Content>"), TemplateCache(), model)
    for parsed in parser.parse(lines):
        record = parsed.record(parser.cache)

A line whose content matches a cached template is parsed by the cache alone (source "cache").
Otherwise the line's template is learnt (source "learnt"): the model writes it when one was
given (a logs task's `log_ask_model`) and the content is at most `MAX_MODEL_CHARS` long, and its answer (with the
plain words in long runs of wildcards taken back) is kept when it matches the line and keeps a word
of it, if the line has one; else (no model, a longer line, an answer cut short or without words, a
model error) the template is the line with only its certain variables abstracted (`template.chunk`:
numbers, hex values, ids, booleans, paths, addresses, host names, timestamps, UUIDs). That
template is joined with the cached ones it is the same event as (`refine.join`) and cached
(`TemplateCache.add`), which may hand back a cached template that covers it instead. The line's
parameters are what its template's match gives: empty in the rare case it does not parse the line
(a cached template of the same text whose wildcard spans no space where this line has one, or a
match past its cap).

`parse(lines, block=N)` / `parse_block` take lines together: those that miss the cache are grouped
by structure (`grouping`), the positions where a group's lines vary like values are forced to be
wildcards, and one template is learnt per group (the model asked once per group, groups in engine
batches of `MODEL_BATCH`) before the lines are matched again. Line by line (`parse_line`), a line
still gets the values earlier groups showed.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from workhorse.errors import WorkhorseError
from workhorse.logparse.cache import TemplateCache
from workhorse.logparse.grouping import EVIDENCE, Evidence, Group, group_lines
from workhorse.logparse.header import LogFormat
from workhorse.logparse.model import SHOWN_LINES, TemplateModel
from workhorse.logparse.refine import JOINING, Joining, join
from workhorse.logparse.template import (
    WILDCARD,
    Chunk,
    Template,
    chunk,
    decided,
    first_word,
    keep_bracketed_words,
    keep_words_in_wildcard_runs,
    normalize,
    ports_apart,
    template_from_choices,
)
from workhorse.logparse.types import param_type

log = logging.getLogger(__name__)
# Longer contents (lists of ids, dumps) get their certain variables without the model: a decision
# per chunk would take seconds, and such lines rarely share a template with a fixed length anyway.
MAX_MODEL_CHARS = 600
# Groups whose templates the model writes in one engine batch (continuous batching: each runs in
# its own sequence, the prompt's shared prefix cached once).
MODEL_BATCH = 8
# Groups of this many different lines or more are decided by their evidence alone (what held on
# every line is a word, what varied a value); the model is asked about lines no other line
# resembles. Chosen on four of the shared eight (OpenSSH, Apache, HDFS, Proxifier, qwen2.5-coder-0.5b):
# the same GA and PA as asking about every group, with 23 model calls instead of 77.
MODEL_BELOW = 2


@dataclass(slots=True)
class ParsedLine:
    number: int  # 1-based position in the input
    header: dict[str, str]
    content: str  # normalized
    template_id: int
    source: str  # "cache" | "learnt" (the line taught a new template)
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
        evidence: Evidence = EVIDENCE,
        model_below: int | None = MODEL_BELOW,
        ports: Literal["with-address", "apart"] = "with-address",
        joining: Joining = JOINING,
    ) -> None:
        """`model`: a TemplateModel, a function that opens one on the first cache miss, or None
        (the cache alone). `on_learn` is called with each template the model adds. `evidence`: when
        a group's varying position is a value (`grouping.Evidence`). `model_below`: ask the model
        only about groups of fewer different lines than this; in larger ones what held on every
        line is a word and what varied a value, without the model (None: ask about every group;
        `MODEL_BELOW` says why 2).
        `ports`: an address and its port as one value (`<*>`) or as two (`<*>:<*>`), as the
        deployment's convention has it (`template.ports_apart`). `joining`: when a new template joins
        cached ones (`refine.Joining`)."""
        self.evidence = evidence
        self.model_below = model_below
        self.ports = ports
        self.joining = joining
        self.log_format = log_format
        self.cache = cache
        self._model = model
        self._on_learn = on_learn
        self.lines = 0
        self.unfit = 0  # lines that did not fit the header format (parsed whole)
        self.model_failures = 0  # lines the model failed on (they get their certain variables)

    def parse(self, lines: Iterable[str], block: int = 1) -> Iterator[ParsedLine]:
        """Parse line by line (`block` 1), or `block` lines at a time: the lines of a block that
        miss the cache are grouped first and each group is learnt once (`parse_block`). A block
        waits for its last line, so a stream that must answer each line at once keeps 1."""
        if block <= 1:
            for line in lines:
                yield self.parse_line(line.rstrip("\r\n"))
            return
        stream = iter(lines)
        while batch := [line.rstrip("\r\n") for line in itertools.islice(stream, block)]:
            yield from self.parse_block(batch)

    def parse_block(self, lines: Sequence[str]) -> list[ParsedLine]:
        """Parse lines together: those the cache knows at once; the others grouped by structure
        (`grouping.group_lines`), one template learnt per group (the model asked once per group,
        the groups of a block in batches), then matched again. A line its group's template does not
        parse after all is learnt alone, as `parse_line` would. As line by line, the first line of
        each new template has source "learnt" and the later ones "cache"."""
        rows = [self._split(line) for line in lines]
        found = [self.cache.match(content, count=False) for _, content, _ in rows]
        misses = Counter(content for (_, content, _), hit in zip(rows, found, strict=True) if hit is None)
        if misses:
            self._learn_groups(misses)
        out, new = [], set()
        for (header, content, fits), hit in zip(rows, found, strict=True):
            self.lines += 1
            source = "cache"
            if hit is None:
                hit = self.cache.match(content, count=False)
                if hit is None:
                    template = self._learn(content)
                    if self._on_learn is not None:
                        self._on_learn(template)
                    hit = (template, template.match(content) or [])
                if hit[0].id not in new:
                    new.add(hit[0].id)
                    source = "learnt"
            template, params = hit
            out.append(ParsedLine(self.lines, header, content, template.id, source, params, fits, template))
        learnt = sum(p.source == "learnt" for p in out)
        self.cache.tally(hits=len(out) - learnt, misses=learnt)
        return out

    def parse_line(self, line: str) -> ParsedLine:
        self.lines += 1
        header, content, fits = self._split(line)
        found = self.cache.match(content)
        if found is not None:
            template, params = found
            return ParsedLine(self.lines, header, content, template.id, "cache", params, fits, template)
        template = self._learn(content)
        if self._on_learn is not None:
            self._on_learn(template)
        params = template.match(content) or []
        return ParsedLine(self.lines, header, content, template.id, "learnt", params, fits, template)

    def _split(self, line: str) -> tuple[dict[str, str], str, bool]:
        """The header fields, the normalized content, and whether the line fit the header format."""
        if self.log_format is not None:
            split = self.log_format.split(line)
            if split is None:
                self.unfit += 1
                return {}, normalize(line), False
            header, content = split
            return header, normalize(content), True
        return {}, normalize(line), True

    @property
    def model_calls(self) -> int:
        return self._model.calls if isinstance(self._model, TemplateModel) else 0

    @property
    def model(self) -> TemplateModel | None:
        if self._model is not None and not isinstance(self._model, TemplateModel):
            self._model = self._model()
        return self._model

    def _learn(self, content: str) -> Template:
        """The template of one line, its tokens that earlier groups showed to be values marked."""
        [group] = group_lines([content], values=self.cache.values)
        chunks = group.chunks(0)
        text = None
        model = self.model if len(content) <= MAX_MODEL_CHARS and None in decided(chunks) else None
        if model is not None:
            try:
                [text] = model.templates([content], list(self.cache), chunks=[chunks])
            except WorkhorseError as error:  # one line the model cannot take must not end the run
                self.model_failures += 1
                log.warning("no template from the model for %r: %s", content[:80], error)
        return self._cache(_template_text(text, content, chunks, group.values), content)

    def _cache(self, text: str, content: str) -> Template:
        """Join a learnt template with the cached ones it is the same event as, and cache it."""
        spanning = frozenset()
        if self.ports == "apart":
            text, spanning = ports_apart(text, content, Template(text, example=content).spanning)
        new = join(Template(text, example=content, spanning=spanning), self.cache.related(text), self.joining)
        return self.cache.add(new.text, content, new.spanning)

    def _learn_groups(self, contents: Counter[str]) -> None:
        """One template per group of `contents` (lines that missed the cache, with how many of
        each), cached. The cached templates that start like them take part as evidence (their
        example lines, standing for the lines they matched), so a group that shows a cached
        template's word to be a value generalizes it (`TemplateCache.add`)."""
        related = {t.id: t for word in dict.fromkeys(map(first_word, contents)) for t in self.cache.related(word or WILDCARD)}
        known = {t.example: t.hits for t in related.values() if t.example and t.example not in contents}
        groups = group_lines(contents, known, self.evidence, self.cache.values)
        if self.cache.remember(v for g in groups for v in g.value_texts()):
            # values shown by some groups of this block are values in its other groups too
            groups = group_lines(contents, known, self.evidence, self.cache.values)
        asked = [g for g in groups if len(g.lines[g.representative].content) <= MAX_MODEL_CHARS
                 and (self.model_below is None or len(g.lines) < self.model_below)
                 and None in decided(g.chunks(g.representative))]  # else the model has nothing to choose
        texts: dict[int, str | None] = {}
        model = self.model if asked else None
        for start in range(0, len(asked) if model is not None else 0, MODEL_BATCH):
            batch = asked[start:start + MODEL_BATCH]
            try:
                answers = model.templates(
                    [g.lines[g.representative].content for g in batch], list(self.cache),
                    chunks=[g.chunks(g.representative) for g in batch],
                    others=[_others(g) for g in batch],
                )
            except WorkhorseError as error:  # a batch the model cannot take must not end the run
                self.model_failures += len(batch)
                log.warning("no templates from the model for %d groups: %s", len(batch), error)
                continue
            for group, text in zip(batch, answers, strict=True):
                texts[id(group)] = text
        for group in groups:
            content = group.lines[group.representative].content
            if all(self.cache.match(line.content, count=False) is not None for line in group.new_lines):
                continue  # a template learnt for an earlier group covers this one (`(<*>)` covers `()`)
            text = _template_text(texts.get(id(group)), content, group.chunks(group.representative), group.values)
            template = self._cache(text, content)
            if self._on_learn is not None:
                self._on_learn(template)


def _template_text(answer: str | None, content: str, chunks: list[Chunk], values: Collection[int]) -> str:
    """The model's template for `content`, its plain words inside wildcard runs taken back, if it
    still parses the line and is not degenerate; else the line with its certain variables only."""
    if answer is not None:
        answer = keep_words_in_wildcard_runs(keep_bracketed_words(answer, content), content, values=values)
        if Template(answer, example=content).match(content) is not None and not _degenerate(answer, content):
            return answer
    return template_from_choices(chunks, [c.variable for c in chunks])


def _others(group: Group) -> list[str]:
    """Lines of the group besides its representative, to show the model what varies: the last
    ones (new lines rather than cached templates' examples), different from each other."""
    rest = [line.content for i, line in enumerate(group.lines) if i != group.representative]
    return list(dict.fromkeys(reversed(rest)))[:SHOWN_LINES]


def _degenerate(template: str, content: str) -> bool:
    """A template that keeps none of the line's words (`<*> <*> <*>`) would swallow unrelated lines."""
    has_words = any(c.kind == "word" and not c.variable and any(ch.isalpha() for ch in c.text) for c in chunk(content))
    kept = any(c.kind == "word" and any(ch.isalpha() for ch in c.text) for c in chunk(template))  # `<*>` cuts into punctuation
    return has_words and not kept

