"""The `logs` kind: its header format, its persistent template cache and its model, put together
(the parsing itself is the `logparse` library).

The model is asked only when the task says so (`log_ask_model`), and opened only when a line
misses the cache, so parsing a log whose templates are all known never loads it. The cache lives at `$WORKHORSE_HOME/logs/<task>/templates.json` and is
saved after every new template (atomically), so an interrupted run keeps what it learnt.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from workhorse.engine import Evaluator
from workhorse.errors import TaskSpecError
from workhorse.logparse.cache import TemplateCache
from workhorse.logparse.header import LogFormat, detect_format
from workhorse.logparse.model import TemplateModel
from workhorse.logparse.parser import LogParser, ParsedLine
from workhorse.logparse.template import Template
from workhorse.paths import workhorse_home
from workhorse.tasks.answer import LocalAnswer
from workhorse.tasks.spec import TaskSpec

DETECT_SAMPLE = 200  # lines read ahead to detect a header format


def cache_path(task: str) -> Path:
    return workhorse_home() / "logs" / task / "templates.json"


class LogTask:
    def __init__(
        self,
        spec: TaskSpec,
        *,
        log_format: str | None = None,
        open_model: Callable[[], Evaluator] | None = None,
        cache_file: Path | None = None,
        ports: Literal["with-address", "apart"] | None = None,
    ) -> None:
        """`open_model` gives the engine on the first cache miss (None: no model, the cache alone).
        `cache_file`: where the cache persists (default: the task's; pass a scratch path to start empty).
        `ports`: an address with its port as one value or two (default: the task's `log_ports`)."""
        if spec.kind != "logs":
            raise TaskSpecError(f"task {spec.name} is a {spec.kind} task, not a logs task", "use a task with kind: logs")
        self.spec = spec
        spec_format = log_format or spec.log_format
        self.log_format = LogFormat.parse(spec_format) if spec_format else None
        self.cache_file = cache_file if cache_file is not None else cache_path(spec.name)
        self.cache = TemplateCache.load(self.cache_file)
        self._lock = threading.Lock()  # one cache, parsed into by concurrent server batches
        model = (lambda: TemplateModel(open_model())) if open_model is not None else None
        self._parser = LogParser(self.log_format, self.cache, model, on_learn=lambda _: self.cache.save(self.cache_file),
                                 ports=ports or spec.log_ports)

    @property
    def model_calls(self) -> int:
        return self._parser.model_calls

    @property
    def model_failures(self) -> int:
        """Lines the model failed on (they got their certain variables only)."""
        return self._parser.model_failures

    def detect(self, sample: Sequence[str]) -> None:
        """Detect the header format from `sample` when none was given (no header found: whole lines)."""
        if self.log_format is None and sample:
            self.log_format = detect_format(list(sample)[:DETECT_SAMPLE])
            self._parser.log_format = self.log_format

    def parse(self, lines: Iterable[str], block: int = 1) -> Iterator[ParsedLine]:
        """Line by line (`block` 1: each line answered as it comes), or `block` lines at a time:
        the unseen lines of a block are grouped and each group learnt once (`LogParser.parse_block`)."""
        if block <= 1:
            for line in lines:
                with self._lock:
                    parsed = self._parser.parse_line(line.rstrip("\r\n"))
                yield parsed
            return
        stream = iter(lines)
        yield from self.parse_blocks(iter(lambda: list(itertools.islice(stream, block)), []))

    def parse_blocks(self, blocks: Iterable[Sequence[str]]) -> Iterator[ParsedLine]:
        """Each block parsed together (a burst of lines appended to a followed file, say)."""
        for batch in blocks:
            with self._lock:
                parsed_block = self._parser.parse_block([line.rstrip("\r\n") for line in batch])
            yield from parsed_block

    def records(self, lines: Iterable[str], block: int = 1) -> Iterator[dict[str, Any]]:
        for parsed in self.parse(lines, block):
            yield parsed.record(self.cache)

    def records_of_blocks(self, blocks: Iterable[Sequence[str]]) -> Iterator[dict[str, Any]]:
        for parsed in self.parse_blocks(blocks):
            yield parsed.record(self.cache)

    def save(self) -> None:
        with self._lock:
            self.cache.save(self.cache_file)

    def templates(self) -> list[Template]:
        """The learnt templates now (a copy: server batches may be adding to the cache)."""
        with self._lock:
            return list(self.cache)


class LogsTask:
    """Answers are one record per line (header fields, template, typed parameters), without a
    confidence: a line the cache does not know gets a template (from the model, if the task asks
    it), which is learnt."""

    def __init__(self, spec: TaskSpec, directory: Path | None, evaluator: Evaluator) -> None:
        self.spec = spec
        self.log_task = LogTask(spec, open_model=(lambda: evaluator) if spec.log_ask_model else None)

    def run(self, texts: Sequence[str]) -> list[LocalAnswer]:
        # a request's lines are parsed together: its unseen lines grouped, one model call per group
        return [LocalAnswer(record) for record in self.log_task.records(texts, block=max(1, len(texts)))]
