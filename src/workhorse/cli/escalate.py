"""`workhorse eval … --escalate`: the accuracy–escalation-rate curve, with the reference labels as a
perfect upstream and, when one is configured, a real upstream model."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import typer

from workhorse.evals.datasets import Dataset

if TYPE_CHECKING:
    from workhorse.pipeline import Pipeline


def escalation_report(
    pipeline: Pipeline,
    dataset: Dataset,
    predicted: list[Any],
    confidence: list[float],
    *,
    upstream_url: str | None,
    upstream_model: str | None,
    max_rate: float,
    png: str | None,
    upstream_key_env: str | None = None,
) -> dict[str, Any]:
    from workhorse.escalation.curve import accuracy_at_rate, escalation_curve, plot, rate_at_threshold

    spec = pipeline.spec
    truth = [ex.label for ex in dataset.examples]
    curves = [escalation_curve(truth, predicted, confidence, points=21)]  # every 5 %
    steps = max(1, round(max_rate / 0.05))  # the real curve on the same 5 % grid, up to max_rate
    real = _real_upstream_answers(pipeline, dataset, confidence, upstream_url, upstream_model, upstream_key_env, steps * 0.05)
    if real is not None:
        name, answers = real
        curves.append(escalation_curve(truth, predicted, confidence, upstream=answers, upstream_name=name,
                                       points=steps + 1, max_rate=steps * 0.05))
    policy = spec.escalation
    operating_rate = rate_at_threshold(confidence, policy.threshold) if policy.mode == "threshold" else None
    if png:
        plot(curves, png, operating_rate=operating_rate, title=f"{spec.name} on {dataset.name}:{dataset.split}")
    operating = None
    if operating_rate is not None:
        operating = {"threshold": policy.threshold, "escalation_rate": operating_rate}
        operating |= {f"accuracy_{c[0]['upstream']}": accuracy_at_rate(c, operating_rate) for c in curves
                      if operating_rate <= c[-1]["escalation_rate"] + 1e-9}
    return {"escalation_curve": [point for curve in curves for point in curve], "escalation_operating_point": operating}


def _real_upstream_answers(pipeline: Pipeline, dataset, confidence, url, model, key_env,
                           max_rate) -> tuple[str, list[Any]] | None:
    """The upstream's answers for the least confident `max_rate` of the items (None elsewhere),
    asked through the task's pipeline (redacted under its privacy policy)."""
    from workhorse.cli.progress import in_batches
    from workhorse.escalation.override import command_line_upstream
    from workhorse.escalation.upstream import UpstreamClient

    spec = pipeline.spec
    configured = spec.escalation.upstream
    if not (url or (configured and configured.base_url)) or not (model or (configured and configured.model)):
        return None
    model = model or (configured.model if configured else None)
    if spec.escalation.privacy == "local_only":
        from workhorse.errors import PrivacyPolicyError

        raise PrivacyPolicyError(
            f"task {spec.name} is local_only: its items may not be sent to {model}",
            "leave out --upstream-url for the perfect-upstream curve only, or change the task's escalation.privacy",
        )
    # The task's key goes only to the task's own upstream (see workhorse.escalation.override).
    options = command_line_upstream(configured, base_url=url, model=model, api_key_env=key_env,
                                    option="--upstream-url", fresh={"timeout_s": 60.0})
    asking = pipeline.with_upstream(UpstreamClient(options))
    order = np.argsort(np.asarray(confidence), kind="stable")[: int(round(max_rate * len(confidence)))]
    answers: list[Any] = [None] * len(confidence)
    try:
        ask = lambda chosen: asking.ask_upstream([dataset.examples[i].text for i in chosen], reason="eval")  # noqa: E731
        for i, escalation in zip(order, in_batches(ask, list(order), batch=32, label=f"asking {model}"), strict=True):
            answers[i] = None if escalation.failed else escalation.answer
    finally:
        asking.close()
    return model, answers


def print_curves(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    by_upstream: dict[str, list[dict[str, Any]]] = {}
    for point in report["escalation_curve"]:
        by_upstream.setdefault(point["upstream"], []).append(point)
    table = Table("escalated", *[f"accuracy ({name})" for name in by_upstream], title="accuracy vs escalation rate")
    perfect = by_upstream["perfect"]
    for i, point in enumerate(perfect):
        cells = [f"{100 * point['escalation_rate']:.0f} %"]
        for curve in by_upstream.values():
            cells.append(f"{100 * curve[i]['accuracy']:.2f} %" if i < len(curve) else "")
        table.add_row(*cells)
    Console().print(table)
    if report.get("escalation_operating_point"):
        typer.echo(f"policy operating point: {report['escalation_operating_point']}")
