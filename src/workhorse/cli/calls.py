"""`workhorse calls …`: the call log — list, show, export and what it all cost."""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from workhorse.calllog import CallLog

app = typer.Typer(help="The call log: every answered call, with its escalation, cost and feedback.", no_args_is_help=True)

DB_HELP = "The call log: a SQLite file or a postgresql:// URL (default: $WORKHORSE_CALL_LOG, else calls.db in $WORKHORSE_HOME)."


def open_call_log(db: str | None) -> CallLog:
    """The call log, read-only (for `calls` and `dataset build`): reading neither migrates it nor
    starts a writer, so it works beside a server writing it and on a log of an older schema."""
    from pathlib import Path

    from workhorse.calllog import CallLog
    from workhorse.errors import WorkhorseError
    from workhorse.paths import call_log_path, is_postgres

    path = db if db and is_postgres(db) else Path(db) if db else call_log_path()
    if not is_postgres(path) and not Path(path).is_file():
        raise WorkhorseError(f"no call log at {path}", "calls are logged by `workhorse serve` and `workhorse run`; or pass --db FILE")
    return CallLog.open_readonly(path)


def _since(hours: float | None) -> float | None:
    return time.time() - hours * 3600 if hours is not None else None


@app.command("list")
def list_calls(
    task: str = typer.Option(None, help="Only this task."),
    limit: int = typer.Option(20, min=1, help="How many (newest first)."),
    hours: float = typer.Option(None, help="Only calls from the last this many hours."),
    db: str = typer.Option(None, help=DB_HELP),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
) -> None:
    """The newest calls."""
    with open_call_log(db) as log:
        rows = log.list(task=task, limit=limit, since=_since(hours))
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row, ensure_ascii=False))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("id", "time", "task", "source", "answer", "conf.", "ms", "input")
    for row in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["created_at"]))
        confidence = f"{row['confidence']:.2f}" if row["confidence"] is not None else ""
        latency = f"{row['latency_ms']:.0f}" if row["latency_ms"] is not None else ""
        table.add_row(str(row["id"]), when, row["task"], row["source"], _short(row["final_answer"]), confidence, latency,
                      _short(row["input"]))
    Console().print(table)


@app.command("show")
def show(call_id: int = typer.Argument(..., help="The call's id."), db: str = typer.Option(None, help=DB_HELP)) -> None:
    """One call in full, as JSON."""
    from workhorse.errors import WorkhorseError

    with open_call_log(db) as log:
        row = log.get(call_id)
    if row is None:
        raise WorkhorseError(f"no call with id {call_id}", "see `workhorse calls list` for ids")
    typer.echo(json.dumps(row, indent=2, ensure_ascii=False))


@app.command("export")
def export(
    jsonl: bool = typer.Option(True, "--jsonl", help="JSON Lines on stdout (the only format)."),
    task: str = typer.Option(None, help="Only this task."),
    hours: float = typer.Option(None, help="Only calls from the last this many hours."),
    db: str = typer.Option(None, help=DB_HELP),
) -> None:
    """Every call as JSON Lines (streamed): training data for the small model."""
    with open_call_log(db) as log:
        for row in log.iterate(task=task, since=_since(hours)):
            sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")


@app.command("stats")
def stats(
    task: str = typer.Option(None, help="Only this task."),
    hours: float = typer.Option(None, help="Only calls from the last this many hours."),
    large_model: str = typer.Option(None, help="Price the all-large counterfactual at this model (default: each task's upstream)."),
    db: str = typer.Option(None, help=DB_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Escalation rate, sources, accuracy where feedback exists, and cost against sending everything to the large model."""
    from workhorse.calllog.prices import PriceTable
    from workhorse.calllog.stats import summarise
    from workhorse.paths import prices_path

    with open_call_log(db) as log:
        report = summarise(log.iterate(task=task, since=_since(hours)), PriceTable.load(prices_path()), large_model=large_model)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("task", "calls", "escalated", "failed", "accuracy", "local $", "upstream $", "actual $", "all-large $",
                  "saved", title="call log")
    rows = list(report["tasks"].items()) + [("all", report["total"])]
    for name, t in rows:
        accuracy = f"{100 * t['accuracy']:.1f} % of {t['with_feedback']}" if t.get("accuracy") is not None else ""
        table.add_row(name, str(t["calls"]), f"{t['escalated']} ({100 * t['escalation_rate']:.1f} %)",
                      str(t["escalation_failed"]), accuracy, _money(t["local_cost"]), _money(t["upstream_cost"]),
                      _money(t["actual_cost"]), _money(t["all_large_cost"]), _saved(t["savings"]))
    console = Console()
    console.print(table)
    if any(t["savings"] is not None and t["savings"] < 0 for _, t in rows):
        console.print("A task that costs more than the all-large price spends more on local CPU time (priced at "
                      "`cpu_second` in the price table, $WORKHORSE_HOME/prices.yaml) than the large model would charge "
                      "for the same calls.")


def _saved(savings: float | None) -> str:
    """The share saved against sending every call to the large model; a loss said as a multiple."""
    if savings is None:
        return ""
    if savings < 0:
        return f"costs {1 - savings:.1f}× the all-large price"
    return f"{100 * savings:.1f} %"


def _money(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def _short(value, width: int = 40) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 1] + "…"
