"""`workhorse eval TASK DATA`: accuracy, calibration and speed of a task on labelled data."""

from __future__ import annotations

import json
import time

import typer


def eval_command(
    task: str = typer.Argument(..., help="Task name or task file."),
    data: str = typer.Argument(..., help="A labelled file or a dataset spec like banking77:test (logs tasks: DIR:SYSTEM, e.g. loghub_2k:HDFS)."),
    limit: int = typer.Option(None, help="Use at most this many rows (a seeded, label-stratified sample)."),
    latency_sample: int = typer.Option(100, help="Items timed one at a time for latency percentiles."),
    threads: int = typer.Option(2, help="llama.cpp threads."),
    escalate: bool = typer.Option(False, "--escalate", help="Also print the accuracy–escalation-rate curve (classify)."),
    upstream_url: str = typer.Option(None, help="--escalate: a real upstream (OpenAI-compatible base URL); default: the task's."),
    upstream_model: str = typer.Option(None, help="--escalate: the real upstream's model name; default: the task's."),
    upstream_key_env: str = typer.Option(
        None, help="--escalate: environment variable with the API key for --upstream-url. Default: the task's "
        "api_key_env when --upstream-url is on the task's upstream host (same scheme, host and port), else no key."),
    max_rate: float = typer.Option(0.5, min=0.01, max=1.0, help="--escalate: the real upstream answers this share, least confident first."),
    png: str = typer.Option(None, help="--escalate: write the curve as a PNG here (needs matplotlib)."),
    mode: str = typer.Option(None, help="classify: run the task in this mode (descriptions, examples, score or head) "
                             "instead of its own, to compare modes on the same data."),
    index: str = typer.Option(None, "--index", help="embed: the labelled rows the items are matched against (a file or dataset "
                              "spec); default: the dataset's train split (a retrieval set's corpus)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Run TASK over DATA in batches (throughput), then item by item on a sample (latency).

    embed tasks: DATA's items are matched by cosine against --index; prints nearest-neighbour label
    accuracy (k=1, k=5) and recall@10."""
    from workhorse.errors import TaskError
    from workhorse.evals.datasets import load
    from workhorse.evals.metrics import classification_report, latency_summary
    from workhorse.pipeline import build_pipeline
    from workhorse.tasks.engines import open_task_engine
    from workhorse.tasks.store import load_task

    spec, directory = load_task(task)
    if mode is not None:
        spec = _in_mode(spec, mode)
    if spec.kind == "logs":
        _eval_logs(spec, directory, data, threads)
        return
    if spec.kind == "embed":
        from workhorse.cli.eval_embed import eval_embed

        eval_embed(spec, directory, data, index=index, limit=limit, threads=threads, as_json=as_json)
        return
    if spec.kind not in ("classify", "extract", "convert"):
        raise TaskError(f"eval of {spec.kind} tasks is not available", "evaluate a classify, extract, convert, embed or logs task")
    dataset = load(data, limit=limit)
    engine = open_task_engine(spec, directory, threads=threads)
    pipeline = build_pipeline(spec, directory, engine, escalate=False)  # the small model alone; --escalate asks aside
    if spec.kind != "classify":
        report = _eval_structured(pipeline, dataset, latency_sample)
        report["data"] = {"spec": data, "rows": len(dataset.examples), "note": dataset.note}
        report["prefix_cache"] = engine.prefix_stats().as_dict()
        typer.echo(json.dumps(report, indent=2, ensure_ascii=False, default=float))
        return
    texts = [ex.text for ex in dataset.examples]
    predictions, wall, latencies = _timed_run(
        pipeline.run, texts, batch=64, latency_sample=latency_sample, label=f"{spec.name} on {data}"
    )
    oos = dataset.oos_label
    mapped = [spec.in_dataset_terms(p.answer, oos) for p in predictions]
    report = classification_report(
        [ex.label for ex in dataset.examples], mapped, [p.confidence for p in predictions], oos_label=oos
    )
    report["items_per_s"] = len(texts) / wall
    report["latency_ms"] = latency_summary(latencies)
    report["task"] = {"name": spec.name, "version": spec.version, "mode": spec.classify.mode, "model": spec.model}
    report["data"] = {"spec": data, "rows": len(texts), "note": dataset.note}
    report["prefix_cache"] = engine.prefix_stats().as_dict()
    if escalate:
        from workhorse.cli.escalate import escalation_report

        report |= escalation_report(pipeline, dataset, mapped, [p.confidence for p in predictions], upstream_url=upstream_url,
                                    upstream_model=upstream_model, max_rate=max_rate, png=png,
                                    upstream_key_env=upstream_key_env)
    if as_json:
        typer.echo(json.dumps(report, indent=2, default=float))
        return
    _print(report)
    if escalate:
        from workhorse.cli.escalate import print_curves

        print_curves(report)


def _eval_logs(spec, directory, data: str, threads: int) -> None:
    """DATA is `DIR:SYSTEM`: a Loghub-style directory (a path, or a folder of the datasets root such
    as loghub_2k) and one of its systems. Parsed from an empty cache; prints one JSON object."""
    from pathlib import Path

    from workhorse.bench.logs_bench import bench_system
    from workhorse.errors import WorkhorseError
    from workhorse.evals.datasets import datasets_root
    from workhorse.logparse.model import TemplateModel
    from workhorse.tasks.engines import open_task_engine

    folder, _, system = data.rpartition(":")
    if not folder or not system:
        raise WorkhorseError(f"logs data must be DIR:SYSTEM, got {data!r}", "e.g. loghub_2k:HDFS or /path/to/logs:MySystem")
    root = Path(folder) if Path(folder).is_dir() else datasets_root() / folder
    model = TemplateModel(open_task_engine(spec, directory, threads=threads)) if spec.log_ask_model else None
    report = bench_system(root, system, model, drain=False, ports=spec.log_ports) | {
        "task": spec.name, "model": spec.model if model else None, "data": data}
    typer.echo(json.dumps(report, indent=2))


def _timed_run(run, texts: list[str], *, batch: int, latency_sample: int, label: str) -> tuple[list, float, list[float]]:
    """All texts in batches (for throughput, with a progress bar), then a sample one at a time
    (for latency). Returns (outputs, wall seconds of the batched pass, per-item latencies)."""
    from workhorse.cli.progress import in_batches, progress

    started = time.perf_counter()
    outputs = in_batches(run, texts, batch=batch, label=label)
    wall = time.perf_counter() - started
    latencies = []
    with progress(f"{label}: latency, one at a time", total=min(latency_sample, len(texts))) as bar:
        for text in texts[:latency_sample]:
            t0 = time.perf_counter()
            run([text])
            latencies.append(time.perf_counter() - t0)
            bar.advance()
    return outputs, wall, latencies


def _eval_structured(pipeline, dataset, latency_sample: int) -> dict:
    """JSON validity and field exact-match of an extract/convert task against gold fields."""
    from workhorse.evals.metrics import entity_f1, extraction_report, latency_summary

    spec = pipeline.spec
    texts = [ex.text for ex in dataset.examples]
    answers, wall, latencies = _timed_run(
        pipeline.run, texts, batch=16, latency_sample=latency_sample, label=f"{spec.name} on {dataset.name}:{dataset.split}"
    )
    gold = [ex.fields or {} for ex in dataset.examples]
    predicted = [a.answer if a.details.get("valid") else None for a in answers]
    report = extraction_report(gold, predicted, schema=spec.schema_)
    if any(isinstance(value, list) for fields in gold for value in fields.values()):
        report["entity_f1"] = entity_f1(gold, predicted)  # entity lists per type (NER data such as CLUENER)
    report["items_per_s"] = len(texts) / wall
    report["latency_ms"] = latency_summary(latencies)
    report["task"] = {"name": spec.name, "version": spec.version, "kind": spec.kind, "model": spec.model}
    return report


def _print(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    task = report["task"]
    table = Table(title=f"{task['name']} v{task['version']} ({task['mode']} mode) on {report['data']['spec']}", show_header=False)
    rows = [
        ("rows", report["n"]),
        ("accuracy", f"{100 * report['accuracy']:.2f} %"),
        ("macro-F1", f"{100 * report['macro_f1']:.2f} %"),
    ]
    if report.get("in_scope_accuracy") is not None:
        rows.append(("in-scope accuracy", f"{100 * report['in_scope_accuracy']:.2f} %"))
    if report.get("oos_recall") is not None:
        rows.append(("OOS recall", f"{report['oos_recall']:.3f}"))
    if "selective_accuracy" in report:
        for coverage, value in report["selective_accuracy"].items():
            rows.append((f"selective accuracy @ {float(coverage):.0%}", f"{100 * value:.2f} %"))
        rows.append(("ECE", f"{report['ece']:.4f}"))
    rows += [
        ("items/s (batched)", f"{report['items_per_s']:.1f}"),
        ("latency p50 / p95 / p99 ms", "{p50:.1f} / {p95:.1f} / {p99:.1f}".format(**report["latency_ms"])),
        ("prefix cache hit rate", f"{100 * report['prefix_cache']['hit_rate']:.1f} %"),
    ]
    worst = report["most_over_answered"]
    rows.append(("most over-answered label", f"{worst['label']}: {worst['answered']} answers for {worst['support']} rows "
                 f"({worst['ratio']:.1f}×)"))
    for key, value in rows:
        table.add_row(key, str(value))
    console = Console()
    console.print(table)
    labels = Table("label", "precision", "recall", "F1", "rows", title="per label (lowest F1 first)")
    for label, scores in sorted(report["per_label"].items(), key=lambda item: (item[1]["f1"], item[0])):
        labels.add_row(label, f"{100 * scores['precision']:.1f} %", f"{100 * scores['recall']:.1f} %",
                       f"{100 * scores['f1']:.1f} %", str(scores["support"]))
    console.print(labels)
    if report["top_confusions"]:
        confusions = Table("true label", "answered", "count", title="top confusions")
        for confusion in report["top_confusions"]:
            confusions.add_row(confusion["true"], confusion["pred"], str(confusion["count"]))
        console.print(confusions)


def _in_mode(spec, mode: str):
    """`spec` switched to classify mode `mode`, checked as a task file would be."""
    from typing import get_args

    from pydantic import ValidationError

    from workhorse.errors import TaskError
    from workhorse.tasks.spec import ClassifyMode, TaskSpec

    modes = get_args(ClassifyMode)
    if spec.kind != "classify" or mode not in modes:
        raise TaskError(f"--mode {mode!r} does not apply to this {spec.kind} task", f"--mode is one of {', '.join(modes)}, for classify tasks")
    try:
        return TaskSpec.model_validate(spec.model_dump(by_alias=True) | {"classify": spec.classify.model_dump() | {"mode": mode}})
    except ValidationError as error:
        raise TaskError(f"task {spec.name!r} cannot run in {mode} mode: {error.errors()[0]['msg']}",
                        "give every label a few `examples` in the task file") from None
