"""`workhorse train TASK --data DIR|FILE|SPEC`: train a candidate, gate it against the incumbent, promote it if it passes."""

from __future__ import annotations

import json

import typer


def train(
    task: str = typer.Argument(..., help="Task name (a classify task is created from the data's labels if it does not exist), "
                               "or an extract or convert task's file (stored as its first version)."),
    data: str = typer.Option(..., "--data", help="A dataset folder from `workhorse dataset build` (its train and "
                             "validation files), or a labelled file or dataset spec (then give --holdout)."),
    holdout: str = typer.Option(None, help="Held-out rows to gate on (default: the dataset folder's validation file)."),
    method: str = typer.Option("head", help="head: the classification head of `workhorse fit`; lora: LoRA adapters on the "
                               "task's model (needs the train extra): for a classify task trained together with the head, "
                               "for an extract or convert task on the rows' answers (`fields` or `answer`)."),
    epochs: float = typer.Option(2.0, min=0.01, help="lora: passes over the training rows."),
    rank: int = typer.Option(8, min=1, help="lora: the adapters' rank."),
    targets: str = typer.Option("all", help="lora: the linear layers of each block to adapt: all, attention, or names "
                                "such as q_proj,v_proj. Fewer cost less when serving."),
    learning_rate: float = typer.Option(3e-4, min=0.0, help="lora: the adapters' learning rate (the head's is 1e-3)."),
    batch_size: int = typer.Option(16, min=1, help="lora: rows per step."),
    seed: int = typer.Option(0, help="lora: the seed; the same seed, data and threads give the same adapter."),
    device: str = typer.Option("cpu", help="lora: cpu, or cuda on a machine with a GPU and torch's CUDA build."),
    margin: float = typer.Option(0.005, min=0.0, help="The candidate's accuracy (extract, convert: field exact-match) must "
                                 "beat the incumbent's by this."),
    max_latency_ratio: float = typer.Option(1.2, min=1.0, help="The candidate's median latency may be at most this × the incumbent's."),
    threads: int = typer.Option(2, help="llama.cpp threads."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Train a candidate version of TASK, measure it and the active version on the same held-out
    rows, and make it active only if it is better by --margin and no worse on the guards
    (out-of-scope recall or valid answers, latency). The gate report is kept with the version (gate.json)."""
    from workhorse.cli.progress import progress
    from workhorse.flywheel.lora_loop import LoraOptions
    from workhorse.flywheel.torch_model import lora_targets
    from workhorse.flywheel.train import train_and_gate, training_data

    train_rows, holdout_rows = training_data(data, holdout)
    lora = LoraOptions(epochs=epochs, rank=rank, alpha=2.0 * rank, targets=lora_targets(targets), learning_rate=learning_rate,
                       batch_size=batch_size, seed=seed, device=device)
    outcome = train_and_gate(task, train_rows, holdout_rows, method=method, margin=margin, max_latency_ratio=max_latency_ratio,
                             threads=threads, lora=lora, phases=progress)
    candidate = outcome.fitted.spec
    report = {"task": candidate.name, "version": candidate.version, "method": method, "train_rows": len(train_rows.examples),
              "promoted": outcome.promoted, "gate": outcome.gate.as_dict()}
    if outcome.lora:
        report["lora"] = outcome.lora.as_dict()
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    gate = outcome.gate
    verdict = "promoted: it answers from now on" if outcome.promoted else "not promoted: the active version stays"
    typer.echo(f"{report['task']} v{report['version']} ({method}, {report['train_rows']} rows): {verdict}")
    if outcome.lora:
        typer.echo(f"  {outcome.lora.summary()}")
    for reason in gate.reasons:
        typer.echo(f"  {reason}")
