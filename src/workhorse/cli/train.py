"""`workhorse train TASK --data DIR|FILE|SPEC`: train a candidate, gate it against the incumbent, promote it if it passes."""

from __future__ import annotations

import json

import typer


def train(
    task: str = typer.Argument(..., help="Task name (created from the data's labels if it does not exist)."),
    data: str = typer.Option(..., "--data", help="A dataset folder from `workhorse dataset build` (its train and "
                             "validation files), or a labelled file or dataset spec (then give --holdout)."),
    holdout: str = typer.Option(None, help="Held-out rows to gate on (default: the dataset folder's validation file)."),
    method: str = typer.Option("head", help="head: the classification head of `workhorse fit`; lora: the head and LoRA "
                               "adapters on the feature model trained together (needs the train extra)."),
    epochs: float = typer.Option(2.0, min=0.01, help="lora: passes over the training rows."),
    rank: int = typer.Option(8, min=1, help="lora: the adapters' rank."),
    learning_rate: float = typer.Option(3e-4, min=0.0, help="lora: the adapters' learning rate (the head's is 1e-3)."),
    batch_size: int = typer.Option(16, min=1, help="lora: rows per step."),
    seed: int = typer.Option(0, help="lora: the seed; the same seed, data and threads give the same adapter."),
    device: str = typer.Option("cpu", help="lora: cpu, or cuda on a machine with a GPU and torch's CUDA build."),
    margin: float = typer.Option(0.005, min=0.0, help="The candidate's accuracy must beat the incumbent's by this."),
    max_latency_ratio: float = typer.Option(1.2, min=1.0, help="The candidate's median latency may be at most this × the incumbent's."),
    threads: int = typer.Option(2, help="llama.cpp threads."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Train a candidate version of TASK, measure it and the active version on the same held-out
    rows, and make it active only if it is better by --margin and no worse on the guards
    (out-of-scope recall, latency). The gate report is kept with the version (gate.json)."""
    from workhorse.cli.progress import progress
    from workhorse.flywheel.lora_classify import LoraOptions
    from workhorse.flywheel.train import train_and_gate, training_data

    train_rows, holdout_rows = training_data(data, holdout)
    lora = LoraOptions(epochs=epochs, rank=rank, alpha=2.0 * rank, learning_rate=learning_rate, batch_size=batch_size,
                       seed=seed, device=device)
    outcome = train_and_gate(task, train_rows, holdout_rows, method=method, margin=margin, max_latency_ratio=max_latency_ratio,
                             threads=threads, lora=lora, phases=progress)
    report = {"task": task, "version": outcome.fitted.spec.version, "method": method, "train_rows": len(train_rows.examples),
              "promoted": outcome.promoted, "gate": outcome.gate.as_dict()}
    if outcome.lora:
        report["lora"] = outcome.lora.as_dict()
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    gate = outcome.gate
    verdict = "promoted: it answers from now on" if outcome.promoted else "not promoted: the active version stays"
    typer.echo(f"{task} v{report['version']} ({method}, {report['train_rows']} rows): {verdict}")
    if outcome.lora:
        trained = outcome.lora
        typer.echo(f"  LoRA: {trained.steps} steps, {trained.tokens:,} tokens in {trained.train_seconds:.0f} s "
                   f"({trained.tokens_per_s:,.0f} tokens/s); calibration accuracy {trained.calibration_accuracy:.4f} "
                   f"(plain head {trained.calibration_accuracy_head:.4f})")
    for reason in gate.reasons:
        typer.echo(f"  {reason}")
