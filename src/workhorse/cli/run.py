"""`workhorse run TASK [FILE|-]`: a task over a file or stdin, streaming JSONL answers."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer


def run(
    task: str = typer.Argument(..., help="Task name or task file."),
    source: str = typer.Argument("-", help="Input file (.jsonl, .csv, .tsv, or text with one item per line), or - for stdin."),
    out: Path = typer.Option(None, "--out", "-o", help="Write answers here (JSONL). Existing answers are kept and their ids skipped."),
    fmt: str = typer.Option(None, "--format", help="jsonl, csv, tsv or text (default: from the file name; stdin: jsonl)."),
    field: str = typer.Option("text", help="The input field or CSV column holding the text."),
    batch: int = typer.Option(32, min=1, help="Items per engine call."),
    threads: int = typer.Option(2, min=1, help="llama.cpp threads."),
    log: bool = typer.Option(True, "--log/--no-log", help="Record every answer in the call log (the flywheel learns from it)."),
    call_log: str = typer.Option(None, "--call-log", help="The call log: a SQLite file or a postgresql:// URL (default: $WORKHORSE_CALL_LOG, else calls.db in $WORKHORSE_HOME, as for serve)."),
    escalate: bool = typer.Option(True, "--escalate/--no-escalate", help="Send what the task's escalation policy selects to its upstream."),
    ray: str = typer.Option(None, "--ray", metavar="ADDRESS|local",
                            help="Run on Ray: a cluster's address (ray://… or host:port), or `local` for a Ray on this machine "
                                 "(needs the ray extra; JSONL, CSV or Parquet with an id column; --out required)."),
    actors: int = typer.Option(1, min=1, help="--ray: actors, each with one engine."),
    cpus_per_actor: int = typer.Option(None, min=1, help="--ray: CPUs per actor, also its llama.cpp threads (default: --threads)."),
    id_field: str = typer.Option("id", help="--ray: the column holding each row's id."),
) -> None:
    """Answer every item of FILE with TASK, streaming one JSON line per item.

    Each line has the item's id, the answer, its confidence, where it came from (local, upstream),
    the escalation reason, the call id, the latency and the task version. Items the task's policy
    escalates go to its upstream, every answer is logged, bad rows are reported by line and
    skipped, and with --out an interrupted run resumes where it stopped. A summary (sources and
    cost) ends the run on stderr."""
    from rich.console import Console

    from workhorse.calllog import CallLog
    from workhorse.cli.progress import progress
    from workhorse.datafile import FORMATS, BadRow, guess_format, open_rows, read_rows
    from workhorse.errors import WorkhorseError
    from workhorse.paths import call_log_path
    from workhorse.pipeline import build_pipeline
    from workhorse.tasks.engines import open_task_engine
    from workhorse.tasks.store import load_task

    if ray is not None:
        _run_on_ray(task, source, out, fmt, field, id_field, batch, ray, actors, cpus_per_actor or threads,
                    (call_log or call_log_path()) if log else None, escalate)
        return
    spec, directory = load_task(task)
    fmt = fmt or ("jsonl" if source == "-" else guess_format(source))
    if fmt not in FORMATS:
        raise WorkhorseError(f"unknown input format {fmt!r}", f"use --format {', '.join(FORMATS)}")
    if source != "-" and not Path(source).is_file():
        raise WorkhorseError(f"input file not found: {source}", "check the path, or use - for stdin")
    done = _done_ids(out) if out else set()
    engine = open_task_engine(spec, directory, threads=threads)
    log_path = (call_log or call_log_path()) if log else None
    calls = CallLog(log_path) if log_path else None
    pipeline = build_pipeline(spec, directory, engine, call_log=calls, escalate=escalate)
    if source == "-":
        sys.stdin.reconfigure(errors="surrogateescape")  # type: ignore[union-attr]
    stream = sys.stdin if source == "-" else open_rows(source)
    sink = out.open("a", encoding="utf-8") if out else sys.stdout
    notes = Console(stderr=True, soft_wrap=True, highlight=False)
    counts = {"skipped": len(done), "bad": 0, "recovered": 0}
    pending: list = []
    total = None if source == "-" else max(_count_rows(source, fmt) - len(done), 0)

    # With --out and the call log, each item is logged under a name made of the output file and its
    # id: a run resumed after a crash between the log's commit and the output's write finds the
    # item's answer in the log instead of answering (and logging) it again.
    ref_prefix = f"run:{out.resolve()}#" if out and calls else None

    def flush() -> None:
        texts = [row.text for row in pending]
        if ref_prefix:
            answers, recovered = pipeline.run_once(texts, [ref_prefix + row.key for row in pending])
        else:
            answers, recovered = pipeline.run(texts), 0
        for row, answer in zip(pending, answers, strict=True):
            sink.write(json.dumps({"id": row.key} | answer.as_dict(), ensure_ascii=False) + "\n")
        sink.flush()
        counts["recovered"] += recovered
        bar.advance(len(pending))
        pending.clear()

    try:
        with progress(f"{spec.name} v{spec.version}", total) as bar:
            for row in read_rows(stream, fmt=fmt, field=field):
                if isinstance(row, BadRow):
                    counts["bad"] += 1
                    notes.print(f"{source}:{row.line}: skipped: {row.problem}", style="yellow", markup=False)
                    continue
                if row.key in done:
                    continue
                pending.append(row)
                if len(pending) == batch:
                    flush()
            if pending:
                flush()
    finally:
        if stream is not sys.stdin:
            stream.close()
        if sink is not sys.stdout:
            sink.close()
        pipeline.close()
        if calls is not None:
            calls.close()
        engine.close()
    notes.print(_summary(pipeline.tally.summary(), counts, log_path, bar.rate()))


def _run_on_ray(task: str, source: str, out: Path | None, fmt: str | None, field: str, id_field: str, batch: int,
                address: str, actors: int, cpus: int, log_to: Any, escalate: bool) -> None:
    from rich.console import Console

    from workhorse.cli.progress import progress
    from workhorse.errors import WorkhorseError
    from workhorse.scale.ray_batch import RayJob, run_on_ray

    if out is None:
        raise WorkhorseError("--ray writes its answers to a file", "add --out answers.jsonl")
    if source == "-" or not Path(source).exists():
        raise WorkhorseError(f"--ray reads a file or folder, not {source!r}", "give the input's path")
    try:
        import ray  # noqa: F401
    except ModuleNotFoundError:
        raise WorkhorseError("--ray needs Ray", "pip install 'workhorse[ray]'") from None
    chosen = fmt or ("parquet" if source.endswith(".parquet") or Path(source).is_dir() else _guess(source))
    job = RayJob(task, source, out, chosen, field=field, id_field=id_field, actors=actors, cpus_per_actor=cpus, batch=batch,
                 log_to=str(log_to) if log_to else None, escalate=escalate, address=address)
    done = _done_ids(out)
    with progress(f"{task} on Ray ({actors} × {cpus} CPU)", None) as bar:
        report = run_on_ray(job, done, on_batch=bar.advance)
    Console(stderr=True).print(f"{report['answered']} answered ({bar.rate():,.1f}/s), {report['skipped']} already done; "
                               f"answers in {out}" + (f"; calls logged to {log_to}" if log_to else ""), markup=False)


def _guess(source: str) -> str:
    from workhorse.datafile import guess_format

    return guess_format(source)


def _summary(tally: dict[str, Any], counts: dict[str, int], log_path: Path | None, rate: float) -> str:
    sources = tally["sources"]
    escalated = f"{tally['escalated']} escalated"
    if tally["escalation_failed"]:
        escalated += f" ({tally['escalation_failed']} failed, answered locally)"
    parts = [f"{tally['items']} answered ({rate:,.1f}/s): {sources.get('local', 0)} local, {sources.get('upstream', 0)} upstream",
             escalated]
    if tally["escalation_blocked"]:
        parts.append(f"{tally['escalation_blocked']} kept local by the task's privacy policy")
    parts.append(f"{counts['skipped']} already done, {counts['bad']} bad rows")
    if counts["recovered"]:
        parts.append(f"{counts['recovered']} found answered in the call log")
    cost = f"cost ${tally['cost']:.4f} (local ${tally['local_cost']:.4f}, upstream ${tally['upstream_cost']:.4f})"
    if tally["unpriced_upstream_calls"]:
        cost += f"; {tally['unpriced_upstream_calls']} upstream calls have no price (add the model to prices.yaml)"
    logged = f"calls logged to {log_path}" if log_path else "not logged (--no-log)"
    return "; ".join(parts) + f"\n{cost}\n{logged}"


def _count_rows(path: str, fmt: str) -> int:
    """Rows in the file, for the progress bar's total (a CSV record spanning lines counts twice)."""
    with open(path, "rb") as f:
        lines = sum(1 for line in f if line.strip())
    return lines - 1 if fmt in ("csv", "tsv") else lines


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
