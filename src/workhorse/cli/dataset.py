"""`workhorse dataset build|show`: versioned training data from the call log and labelled files."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import typer

from workhorse.cli.calls import DB_HELP, open_call_log

if TYPE_CHECKING:
    from rich.console import Console

app = typer.Typer(help="Training datasets from the call log: feedback, upstream and confident local answers.",
                  no_args_is_help=True)

ALL_SOURCES = "feedback,upstream,local,data"
CONFLICTS_PRINTED = 10


@app.command("build")
def build(
    task: str = typer.Argument(..., help="Task name or task file; answers are checked against it (kind, labels)."),
    output: str = typer.Option(..., "--output", "-o", help="Dataset folder: each build writes the next DIR/vN/."),
    from_log: bool = typer.Option(False, "--from-log", help="Read the call log; the default unless --data is given."),
    data: list[str] = typer.Option(None, "--data", help="Labelled data: a JSONL/CSV file or a dataset spec like "
                                   "banking77:train (repeatable). Precedence: feedback > data > upstream > local."),
    since: str = typer.Option(None, help="Only calls from then on: 2024-05-01, 2024-05-01T08:30 (local time unless "
                              "it has an offset) or a span back from now: 7d, 12h, 30m."),
    sources: str = typer.Option(ALL_SOURCES, help="The answers to use, a comma list of feedback, upstream, local, data."),
    min_confidence: float = typer.Option(0.9, min=0.0, max=1.0,
                                         help="A local answer is used only at or above this confidence of the small model."),
    test_percent: int = typer.Option(10, min=0, max=100, help="Share of texts in test (by a hash of the normalised text)."),
    validation_percent: int = typer.Option(10, min=0, max=100, help="Share of texts in validation."),
    db: str = typer.Option(None, help=DB_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as one JSON document (nothing else on stdout)."),
) -> None:
    """Merge a task's feedback, upstream answers and confident local answers (and --data) into
    DIR/vN/{train,validation,test}.jsonl with a manifest; prints counts per source and label and the conflicts."""
    from pathlib import Path

    from workhorse.flywheel.candidates import SOURCES, Selection
    from workhorse.flywheel.dataset import BuildOptions, build_dataset
    from workhorse.flywheel.since import parse_since
    from workhorse.flywheel.split import SplitPercents
    from workhorse.tasks.store import load_task

    chosen = {s.strip() for s in sources.split(",") if s.strip()}
    if not chosen or chosen - set(SOURCES):
        raise typer.BadParameter(f"{sources!r}: a comma list of {ALL_SOURCES}", param_hint="--sources")
    if data and "data" not in chosen:
        raise typer.BadParameter("--data was given but `data` is not among --sources", param_hint="--sources")
    if test_percent + validation_percent > 100:
        raise typer.BadParameter("--test-percent and --validation-percent add up to more than 100",
                                 param_hint="--validation-percent")
    try:
        since_time = parse_since(since) if since is not None else None
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--since") from None
    spec, _ = load_task(task)
    options = BuildOptions(Selection(frozenset(chosen), min_confidence), SplitPercents(test_percent, validation_percent),
                           since_time, tuple(data or ()))
    if from_log or not data:
        with open_call_log(db) as log:
            built = build_dataset(spec, Path(output), options, log)
    else:
        built = build_dataset(spec, Path(output), options)
    report = {"directory": str(built.directory), **built.manifest}
    if as_json:
        typer.echo(json.dumps(report, indent=2, ensure_ascii=False))
        return
    _print_report(report, built=True)


@app.command("show")
def show(
    directory: str = typer.Argument(..., help="A dataset folder (its newest version is shown) or one of its vN folders."),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as one JSON document."),
) -> None:
    """A dataset version's manifest: rows per split, source and label, conflicts, and whether its files are intact."""
    from pathlib import Path

    from workhorse.flywheel.output import changed_files, read_manifest, resolve

    version_dir = resolve(Path(directory))
    manifest = read_manifest(version_dir)
    report = {"directory": str(version_dir), **manifest, "changed_files": changed_files(version_dir, manifest)}
    if as_json:
        typer.echo(json.dumps(report, indent=2, ensure_ascii=False))
        return
    _print_report(report, built=False)


def _print_report(report: dict[str, Any], *, built: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    counts, options = report["counts"], report["options"]
    versions = ", ".join(map(str, report["task_versions"])) or "none logged"
    console.print(f"{report['task']} ({report['kind']}), dataset v{report['version']}, built {report['created']}; "
                  f"task versions: {versions}")
    if options["since"] or options["data"]:
        console.print(f"calls since {options['since'] or 'the start'}; data: {', '.join(options['data']) or 'none'}")
    console.print(f"precedence: feedback > data > upstream > local (at confidence ≥ {options['min_confidence']}); "
                  f"split by text hash: test {options['test_percent']} %, validation {options['validation_percent']} %")
    summary = Table("source", "candidates", "rows kept", title="sources")
    for source, offered in counts["candidates"].items():  # a source can offer candidates and keep no row
        summary.add_row(source, str(offered), str(counts["sources"].get(source, 0)))
    summary.add_row("all", str(sum(counts["candidates"].values())), str(counts["rows"]))
    console.print(summary)
    if counts["labels"]:
        labels = Table("label", "train", "validation", "test", "total", title="labels")
        for label, n in counts["labels"].items():
            labels.add_row(label, str(n["train"]), str(n["validation"]), str(n["test"]), str(sum(n.values())))
        console.print(labels)
    read = ", ".join(f"{n} {what}" for what, n in counts["read"].items() if n)
    console.print(f"read {read}; {counts['duplicates']} duplicates merged, {counts['overridden']} answers overridden "
                  f"by a higher source, {counts['conflicts']} conflicts")
    if counts["skipped"]:
        skipped = Table("dropped because", "count", title="dropped")
        for reason, n in counts["skipped"].items():
            skipped.add_row(reason, str(n))
        console.print(skipped)
    _print_conflicts(console, report)
    splits = ", ".join(f"{split} {n}" for split, n in counts["splits"].items())
    verb = "wrote" if built else "at"
    console.print(f"{verb} {report['directory']}: {counts['rows']} rows ({splits})")
    if report.get("changed_files"):
        console.print(f"[red]changed since the build (sha256 differs or missing): {', '.join(report['changed_files'])}[/red]")


def _print_conflicts(console: Console, report: dict[str, Any]) -> None:
    """The first conflicts: texts whose top source gave different answers (the newest was kept)."""
    if not report["conflicts"]:
        return
    from rich.table import Table

    table = Table("text", "source", "answers, newest (kept) first",
                  title=f"conflicts ({report['counts']['conflicts']}; all in conflicts.jsonl)")
    for conflict in report["conflicts"][:CONFLICTS_PRINTED]:
        answers = " | ".join(json.dumps(a["answer"], ensure_ascii=False) for a in conflict["answers"])
        table.add_row(conflict["text"], conflict["source"], answers)
    console.print(table)
