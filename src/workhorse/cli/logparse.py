"""`workhorse logs parse`: raw log lines to JSONL records (header fields, template, typed parameters)."""

from __future__ import annotations

import itertools
import json
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TextIO

import typer

# Lines grouped at a time when reading a file: a group's lines show the model what varies, and the
# first record waits for at most this many lines to be read.
BLOCK = 1000


def parse(
    source: str = typer.Argument("-", help="A log file, or - for stdin."),
    log_format: str = typer.Option(
        None, "--format", help="Header format, e.g. '<Date> <Time> <Level> <Component>: <Content>' (default: the task's, else detected)."
    ),
    task: str = typer.Option("log-templates", help="The logs task: its model, format and template cache."),
    output: str = typer.Option(None, "--output", "-o", help="Write JSONL here (default: stdout)."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep reading lines appended to FILE, like tail -f (Ctrl-C stops)."),
    ask_model: bool | None = typer.Option(
        None, "--ask-model/--no-model",
        help="Ask the task's model for the template of a line no other line of its block resembles, or leave it to the "
        "rules and the evidence of other lines (default: the task's log_ask_model, off for log-templates)."),
    threads: int = typer.Option(2, help="llama.cpp threads."),
    ports: str = typer.Option(None, help="An address with its port as one value (with-address) or two (apart: `<*>:<*>`); "
                              "default: the task's log_ports."),
    block: int = typer.Option(
        BLOCK, min=1, help="Lines read before their unseen ones are grouped and learnt, a template per group "
        "(following a file, a block also ends where the lines written so far end; 1: each line on its own, "
        "for a live pipe on stdin)."),
) -> None:
    """Parse a log into templates: cached templates parse their lines at once; the unseen lines of a
    block are grouped, and each group's template (what varies across its lines is a value; the
    model's choice, when asked, for a line alone) is cached for the next ones."""
    from rich.console import Console

    from workhorse.errors import WorkhorseError
    from workhorse.tasks.engines import open_task_engine
    from workhorse.tasks.logs import DETECT_SAMPLE, LogTask
    from workhorse.tasks.store import load_task

    spec, directory = load_task(task)
    if follow and source == "-":
        raise WorkhorseError("--follow needs a file", "pass the log file's path, or read stdin without --follow")
    if source != "-" and not Path(source).is_file():
        raise WorkhorseError(f"log file not found: {source}", "check the path, or use - for stdin")
    asked = spec.log_ask_model if ask_model is None else ask_model
    open_model = (lambda: open_task_engine(spec, directory, threads=threads)) if asked else None
    if ports not in (None, "with-address", "apart"):
        raise WorkhorseError(f"--ports must be with-address or apart, not {ports!r}", "an address with its port is one value "
                             "(with-address) or two (apart) in your logs' convention")
    log_task = LogTask(spec, log_format=log_format, open_model=open_model, ports=ports)
    stream: TextIO = sys.stdin if source == "-" else open(source, encoding="utf-8", errors="replace")  # noqa: SIM115
    lines = _lines(stream, follow)
    head = _head(lines, DETECT_SAMPLE)
    log_task.detect(head)
    console = Console(stderr=True)
    if log_task.log_format is None:
        console.print("no common header found: whole lines are parsed as content (pass --format to split one)")
    else:
        console.print(f"header format: {log_task.log_format.spec}")
    out: TextIO = open(output, "w", encoding="utf-8") if output else sys.stdout  # noqa: SIM115
    started, last = time.perf_counter(), 0.0
    count = 0
    try:
        records = log_task.records_of_blocks(_blocks(itertools.chain(head, lines), block))
        for count, record in enumerate(records, start=1):
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            now = time.perf_counter()
            if now - last > 2:  # progress on stderr, so stdout stays pure JSONL
                last = now
                console.print(_progress(log_task, count, now - started), highlight=False)
    except KeyboardInterrupt:
        pass
    finally:
        log_task.save()
        if output:
            out.close()
        if stream is not sys.stdin:
            stream.close()
    console.print(_progress(log_task, count, time.perf_counter() - started) + f"; cache: {log_task.cache_file}", highlight=False)


def _progress(log_task, count: int, seconds: float) -> str:
    rate = count / seconds if seconds else 0.0
    failures = f" ({log_task.model_failures} failed: certain variables only)" if log_task.model_failures else ""
    return (f"{count} lines, {len(log_task.cache)} templates, {log_task.cache.hits} cache hits, "
            f"{log_task.model_calls} model calls{failures}, {rate:,.0f} lines/s")


def _lines(stream: TextIO, follow: bool) -> Iterator[str | None]:
    """The stream's lines; following a file, None each time the lines written so far are used up
    (before waiting for more)."""
    partial = ""  # following a file, a line being written is read once it is whole
    waiting = False
    while True:
        line = stream.readline()
        if line.endswith("\n") or (line and not follow):
            yield partial + line
            partial, waiting = "", False
        elif follow:
            partial += line
            if not waiting:
                yield None
                waiting = True
            time.sleep(0.25)
        else:
            return


def _head(lines: Iterator[str | None], n: int) -> list[str]:
    """Up to `n` first lines to detect the header from: fewer when a followed file has no more yet."""
    head: list[str] = []
    for line in lines:
        if line is None:
            if head:
                break
        else:
            head.append(line)
            if len(head) == n:
                break
    return head


def _blocks(lines: Iterable[str | None], size: int) -> Iterator[list[str]]:
    """Blocks of up to `size` lines, a block also ending where a followed file's lines end for now
    (so each line is answered once the lines written with it are read, not after `size` more)."""
    block: list[str] = []
    for line in lines:
        if line is not None:
            block.append(line)
        if block and (line is None or len(block) == size):
            yield block
            block = []
    if block:
        yield block
