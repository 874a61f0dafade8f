"""`workhorse tasks …`: create, validate and list task specs."""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(help="Task specs: create, validate and list them.", no_args_is_help=True)

EXAMPLES_PER_LABEL = 5
_TEMPLATES = {
    "classify": {
        "kind": "classify",
        "model": "gemma3-270m",
        "instructions": "Answer with the one label that fits the input.",
        "labels": [
            {"name": "first_label", "description": "what it means", "examples": ["an input with this label", "another one"]},
            {"name": "second_label", "description": "what it means", "examples": ["an input with this label", "another one"]},
        ],
    },
    "extract": {
        "kind": "extract",
        "model": "qwen2.5-coder-0.5b",
        "instructions": "Extract the fields. Copy values exactly; use null when absent.",
        "schema": {"type": "object", "properties": {"field": {"type": ["string", "null"]}}, "required": ["field"]},
    },
    "convert": {
        "kind": "convert",
        "model": "qwen2.5-coder-0.5b",
        "instructions": "Convert the input to the target format.",
        "target": "json",
    },
    "embed": {"kind": "embed", "model": "gemma3-270m", "embed": {"pooling": "mean", "normalize": True}},
}


@app.command("new")
def new(
    name: str = typer.Argument(..., help="Task name (lowercase letters, digits, -, _, .)."),
    kind: str = typer.Option("classify", help="classify, extract, convert or embed."),
    out: Path = typer.Option(None, help="Where to write the YAML (default: ./NAME.yaml)."),
    labels_from: str = typer.Option(
        None, help="Take a classify task's labels from labelled data (file or dataset spec), each with its first "
        f"{EXAMPLES_PER_LABEL} distinct texts as examples: the task then runs in examples mode, no `fit` needed."),
    force: bool = typer.Option(False, help="Overwrite an existing file."),
) -> None:
    """Write a task file to start from; edit it, then `workhorse tasks validate FILE`."""
    import yaml

    from workhorse.errors import TaskSpecError
    from workhorse.tasks.store import parse_task

    if kind not in _TEMPLATES:
        raise TaskSpecError(f"unknown kind {kind!r}", f"use one of: {', '.join(_TEMPLATES)}")
    path = out or Path(f"{name}.yaml")
    if path.exists() and not force:
        raise TaskSpecError(f"{path} already exists", "choose another --out or pass --force")
    template = {"name": name, **_TEMPLATES[kind]}
    if labels_from:
        from workhorse.evals.datasets import load

        data = load(labels_from)
        template["labels"] = [{"name": label, "examples": texts} for label, texts in _first_examples(data.examples).items()]
    text = yaml.safe_dump(template, sort_keys=False, allow_unicode=True)
    parse_task(text, str(path))  # the template itself must be valid
    path.write_text(text, encoding="utf-8")
    typer.echo(f"wrote {path}")


def _first_examples(rows) -> dict[str, list[str]]:
    """Each label's first EXAMPLES_PER_LABEL distinct texts, labels in sorted order."""
    by_label: dict[str, list[str]] = {}
    for row in rows:
        if row.label:
            texts = by_label.setdefault(row.label, [])
            if len(texts) < EXAMPLES_PER_LABEL and row.text not in texts:
                texts.append(row.text)
    return dict(sorted(by_label.items()))


@app.command("validate")
def validate(files: list[Path] = typer.Argument(..., help="Task YAML files.")) -> None:
    """Check task files; errors name the file, line and field."""
    from workhorse.tasks.store import load_task

    for file in files:
        spec, _ = load_task(file)
        typer.echo(f"{file}: ok ({spec.kind}, {len(spec.labels)} labels, model {spec.model})")


@app.command("list")
def list_tasks(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Tasks in the store (with their versions) and the shipped examples."""
    from workhorse.tasks.store import EXAMPLES_DIR, list_task_names, load_task, task_versions

    rows = []
    for name in list_task_names():
        spec, directory = load_task(name)
        rows.append({"name": name, "kind": spec.kind, "mode": spec.classify.mode if spec.kind == "classify" else None,
                     "versions": task_versions(name), "active": spec.version, "model": spec.model, "source": str(directory)})
    for path in sorted(EXAMPLES_DIR.glob("*.yaml")):
        spec, _ = load_task(path)
        rows.append({"name": spec.name, "kind": spec.kind, "mode": spec.classify.mode if spec.kind == "classify" else None,
                     "versions": ["example"], "active": None, "model": spec.model, "source": str(path)})
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "kind", "mode", "versions (active*)", "model")
    for row in rows:
        versions = ", ".join(f"{v}*" if v == row["active"] else str(v) for v in row["versions"])
        table.add_row(row["name"], row["kind"], row["mode"] or "", versions, row["model"])
    Console().print(table)


@app.command("promote")
def promote(
    task: str = typer.Argument(..., help="A task in the store."),
    version: int = typer.Argument(..., help="The version that answers from now on."),
) -> None:
    """Make VERSION the task's active version (a running server switches to it within seconds)."""
    from workhorse.tasks.store import promote as promote_version

    previous = promote_version(task, version, reason="promoted by hand")
    typer.echo(f"{task}: v{version} is active (was v{previous})")


@app.command("rollback")
def rollback(
    task: str = typer.Argument(..., help="A task in the store."),
    version: int = typer.Argument(None, help="The version to go back to (default: the one active before)."),
) -> None:
    """Make an earlier version active again."""
    from workhorse.tasks.store import rollback as rollback_version

    typer.echo(f"{task}: v{rollback_version(task, version)} is active again")


@app.command("calibrate")
def calibrate(
    task: str = typer.Argument(..., help="The task (name or file)."),
    data: str = typer.Argument(..., help="Labelled dev data (file or dataset spec)."),
    rate: float = typer.Option(..., min=0.001, max=0.999, help="Target share of items to escalate, e.g. 0.2."),
    base_url: str = typer.Option(None, help="Upstream OpenAI-compatible base URL (default: the task's)."),
    model: str = typer.Option(None, help="Upstream model (default: the task's)."),
    api_key_env: str = typer.Option(
        None, help="Environment variable with the upstream's API key. Default: the task's api_key_env when --base-url "
        "is on the task's upstream host (same scheme, host and port), else no key."),
    limit: int = typer.Option(None, help="Use at most this many rows."),
    threads: int = typer.Option(2, help="llama.cpp threads."),
) -> None:
    """Set the escalation threshold that sends `rate` of DATA to the large model; saves a new task version."""
    from workhorse.cli.progress import in_batches
    from workhorse.errors import TaskSpecError
    from workhorse.escalation.override import command_line_upstream
    from workhorse.escalation.policy import threshold_for_rate
    from workhorse.evals.datasets import load
    from workhorse.pipeline import build_pipeline
    from workhorse.tasks.engines import open_task_engine
    from workhorse.tasks.spec import EscalationOptions
    from workhorse.tasks.store import load_task, save_revision

    spec, directory = load_task(task)
    upstream = spec.escalation.upstream
    if base_url or model or api_key_env:
        if not (base_url or upstream) or not (model or upstream):
            raise TaskSpecError("an upstream needs both a base URL and a model", "pass --base-url and --model")
        # The task's key goes only to the task's own upstream (see workhorse.escalation.override).
        upstream = command_line_upstream(upstream, base_url=base_url, model=model, api_key_env=api_key_env,
                                         option="--base-url")
    if upstream is None:
        raise TaskSpecError(f"task {spec.name} has no escalation upstream", "pass --base-url and --model")
    dataset = load(data, limit=limit)
    engine = open_task_engine(spec, directory, threads=threads)
    pipeline = build_pipeline(spec, directory, engine, escalate=False)  # the small model's own confidence
    texts = [ex.text for ex in dataset.examples]
    confidences = [a.confidence or 0.0 for a in in_batches(pipeline.run, texts, batch=64, label=f"{spec.name} on {data}")]
    engine.close()
    threshold = threshold_for_rate(confidences, rate)
    escalation = EscalationOptions.model_validate(
        spec.escalation.model_dump() | {"mode": "threshold", "threshold": threshold, "target_rate": rate,
                                        "upstream": upstream.model_dump()}
    )
    saved = save_revision(spec.model_copy(update={"escalation": escalation}), directory)
    typer.echo(f"{spec.name}: escalate below confidence {threshold:.4f} ({100 * rate:.1f} % of {len(texts)} rows of {data}) "
               f"→ {saved}")


@app.command("abstain")
def abstain(
    task: str = typer.Argument(..., help="A classify task trained with a head (name or file)."),
    data: str = typer.Argument(..., help="Labelled validation data with out-of-scope rows, e.g. clinc150:val."),
    oos_recall: float = typer.Option(
        None, min=0.01, max=0.99,
        help="Keep out-of-scope recall at least this (at 95 %% confidence on DATA) and take the best in-scope accuracy "
        "under it. Default: the task's setting, else the threshold maximising the mean of in-scope accuracy and recall."),
    limit: int = typer.Option(None, help="Use at most this many rows."),
    threads: int = typer.Option(2, help="llama.cpp threads."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Choose again when TASK abstains (its out-of-scope detector and threshold), on DATA; saves a new version."""
    from workhorse.cli.progress import progress
    from workhorse.evals.datasets import load
    from workhorse.tasks.abstention import abstain_again, keeping_recall
    from workhorse.tasks.engines import open_task_engine
    from workhorse.tasks.store import load_task

    spec, directory = load_task(task)
    if oos_recall is not None:
        spec = keeping_recall(spec, oos_recall)
    dataset = load(data, limit=limit)
    engine = open_task_engine(spec, directory, threads=threads)
    try:
        with progress(f"features ({spec.model})", total=len(dataset.examples)) as bar:
            saved, chosen, calibration = abstain_again(spec, directory, dataset, engine, progress=bar.advance)
    finally:
        engine.close()
    summary = {"task": spec.name, "directory": str(saved), **chosen.model_dump(), "rows": len(dataset.examples),
               "in_scope_accuracy": calibration.in_scope_accuracy, "out_of_scope_recall": calibration.recall}
    typer.echo(json.dumps(summary, indent=2) if as_json else
               f"{spec.name}: abstain below {chosen.detector} {chosen.threshold:.2f}; on {len(dataset.examples)} rows of "
               f"{data}: in-scope accuracy {100 * calibration.in_scope_accuracy:.2f} %, out-of-scope recall "
               f"{calibration.recall:.3f} → {saved}")
