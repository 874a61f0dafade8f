"""`workhorse fit DATA --task NAME`: train a classification head on labelled data."""

from __future__ import annotations

import json
from typing import Any

import typer


def fit(
    data: str = typer.Argument(..., help="A labelled file (CSV/JSONL with text,label) or a dataset spec like banking77:train."),
    task: str = typer.Option(..., "--task", "-t", help="Task name; created from the data's labels if it does not exist."),
    model: str = typer.Option(None, help="Feature model (default: the task's, else gemma3-270m)."),
    prompt: str = typer.Option(None, help='Feature prompt with one {text}, e.g. \'This banking message: "{text}" means in one word: "\'.'),
    layers: str = typer.Option(None, help="Comma-separated intermediate layers to add to the features, e.g. 12,15."),
    pooling: str = typer.Option(None, help="Features: `last` (the last token's state) or `last+mean` (joined by the item's mean)."),
    limit: int = typer.Option(None, help="Use at most this many rows (a seeded, label-stratified sample)."),
    validation: str = typer.Option(
        None,
        help="Validation data; when it has an out-of-scope label (clinc150), the out-of-scope detector and its "
        "threshold are tuned on it.",
    ),
    oos_recall: float = typer.Option(
        None, min=0.01, max=0.99,
        help="With --validation: keep out-of-scope recall at least this (at 95 %% confidence on the validation rows) "
        "and take the best in-scope accuracy under it; later versions keep the setting. Default: the task's, else "
        "the threshold maximising the mean of in-scope accuracy and recall."),
    threads: int = typer.Option(2, help="llama.cpp threads."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Extract features with the task's model and train a calibrated head; saves a new task version."""
    summary = train_head(data, task, model=model, prompt=prompt, layers=layers, pooling=pooling, limit=limit,
                         validation=validation, oos_recall=oos_recall, threads=threads)
    typer.echo(json.dumps(summary, indent=2) if as_json else describe(summary))


def train_head(data: str, task: str, *, model: str | None = None, prompt: str | None = None, layers: str | None = None,
               pooling: str | None = None, limit: int | None = None, validation: str | None = None,
               oos_recall: float | None = None, threads: int = 2) -> dict[str, Any]:
    """Fit a head as `workhorse fit` does (progress on stderr) and return its summary."""
    from workhorse.cli.progress import progress
    from workhorse.evals.datasets import load
    from workhorse.tasks.abstention import keeping_recall, with_out_of_scope_rows
    from workhorse.tasks.engines import engine_config, open_engine
    from workhorse.tasks.fit import carried_adapter, task_for_data
    from workhorse.tasks.fit import fit as fit_head

    if pooling not in (None, "last", "last+mean"):
        raise typer.BadParameter(f"{pooling!r}: use `last` or `last+mean`", param_hint="--pooling")
    if oos_recall is not None and validation is None:
        raise typer.BadParameter("the recall is kept on validation rows with out-of-scope ones: give --validation too",
                                 param_hint="--oos-recall")
    dataset = load(data, limit=limit)
    val = load(validation) if validation else None
    layer_list = [int(x) for x in layers.split(",")] if layers else None
    spec = task_for_data(task, dataset, model=model, prompt=prompt, layers=layer_list, pooling=pooling)
    if oos_recall is not None:
        spec = keeping_recall(spec, oos_recall)
    if val is not None:
        val = with_out_of_scope_rows(val, spec)
    engine = open_engine(spec.model, engine_config(threads=threads, kinds=[spec.kind], adapter=carried_adapter(spec)))
    total = len(dataset.examples) + (len(val.examples) if val is not None else 0)
    with progress(f"features ({spec.model})", total=total) as bar:
        result = fit_head(spec, dataset, engine, validation=val, progress=bar.advance)
    engine.close()
    return {
        "task": result.spec.name,
        "version": result.spec.version,
        "directory": str(result.directory),
        "rows": result.report.n_train,
        "labels": result.report.n_labels,
        "c": result.report.c,
        "holdout_accuracy": result.report.holdout_accuracy,
        "temperature": result.report.temperature,
        "out_of_scope": result.spec.classify.out_of_scope.model_dump() if result.spec.classify.out_of_scope else None,
    }


def describe(summary: dict[str, Any]) -> str:
    return (f"trained {summary['task']} v{summary['version']}: {summary['rows']} rows, {summary['labels']} labels, "
            f"held-out accuracy {100 * summary['holdout_accuracy']:.1f} % → {summary['directory']}")
