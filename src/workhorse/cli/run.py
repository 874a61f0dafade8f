"""`workhorse run TASK [FILE|-]`: a task over a file or stdin, streaming JSONL answers."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import typer


def run(
    task: str = typer.Argument(..., help="Task name or task file."),
    source: str = typer.Argument("-", help="Input file (.jsonl, .csv, or text with one item per line), or - for stdin."),
    out: Path = typer.Option(None, "--out", "-o", help="Write answers here (JSONL). Existing answers are kept and their ids skipped."),
    fmt: str = typer.Option(None, "--format", help="jsonl, csv, tsv or text (default: from the file name; stdin: jsonl)."),
    field: str = typer.Option("text", help="The input field or CSV column holding the text."),
    batch: int = typer.Option(32, min=1, help="Items per engine call."),
    threads: int = typer.Option(2, help="llama.cpp threads."),
) -> None:
    """Answers carry the answer, its confidence, the latency and the task version."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from workhorse.errors import WorkhorseError
    from workhorse.tasks.items import FORMATS, BadRow, guess_format, open_items, read_items
    from workhorse.tasks.runner import TaskRunner
    from workhorse.tasks.runtime import open_engine
    from workhorse.tasks.store import load_task

    spec, directory = load_task(task)
    fmt = fmt or ("jsonl" if source == "-" else guess_format(source))
    if fmt not in FORMATS:
        raise WorkhorseError(f"unknown input format {fmt!r}", f"use --format {', '.join(FORMATS)}")
    if source != "-" and not Path(source).is_file():
        raise WorkhorseError(f"input file not found: {source}", "check the path, or use - for stdin")
    done = _done_ids(out) if out else set()
    runner = TaskRunner(spec, directory, open_engine(spec.model, threads=threads))
    if source == "-":
        sys.stdin.reconfigure(errors="surrogateescape")  # type: ignore[union-attr]
    stream = sys.stdin if source == "-" else open_items(source)
    sink = out.open("a", encoding="utf-8") if out else sys.stdout
    errors = Console(stderr=True)
    counts = {"answered": 0, "skipped": len(done), "bad": 0}
    pending = []

    def flush() -> None:
        started = time.perf_counter()
        answers = runner.run([item.text for item in pending])
        per_item_ms = 1000 * (time.perf_counter() - started) / len(pending)
        for item, answer in zip(pending, answers):
            record = {"id": item.id, "answer": answer.answer, "confidence": answer.confidence, **answer.details,
                      "latency_ms": round(per_item_ms, 2), "task": spec.name, "version": spec.version}
            sink.write(json.dumps(record, ensure_ascii=False) + "\n")
        sink.flush()
        counts["answered"] += len(pending)
        progress.advance(bar, len(pending))
        pending.clear()

    try:
        with Progress(*Progress.get_default_columns()[:1], BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=errors, transient=True) as progress:
            bar = progress.add_task(f"{spec.name} v{spec.version}", total=None)
            for entry in read_items(stream, fmt=fmt, field=field):
                if isinstance(entry, BadRow):
                    counts["bad"] += 1
                    errors.print(f"{source}:{entry.line}: skipped: {entry.problem}", style="yellow", soft_wrap=True,
                                 markup=False, highlight=False)
                    continue
                if entry.id in done:
                    continue
                pending.append(entry)
                if len(pending) == batch:
                    flush()
            if pending:
                flush()
    finally:
        if stream is not sys.stdin:
            stream.close()
        if sink is not sys.stdout:
            sink.close()
    errors.print(f"{counts['answered']} answered, {counts['skipped']} already done, {counts['bad']} bad rows",
                 soft_wrap=True, highlight=False)


def _done_ids(path: Path) -> set[str]:
    """Ids already answered in an earlier (possibly interrupted) run; a torn last line is dropped."""
    if not path.is_file():
        return set()
    done = set()
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    good = []
    for line in lines:
        try:
            done.add(str(json.loads(line)["id"]))
            good.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            break  # an interrupted write: keep what precedes it
    if len(good) != len(lines):
        path.write_text("".join(good), encoding="utf-8")
    return done
