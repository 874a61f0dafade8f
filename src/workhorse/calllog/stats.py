"""`workhorse logs stats`: escalation rate, where answers came from, accuracy where feedback
exists, and the bill — actual cost against sending every call to the large model."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from workhorse.calllog.prices import PriceTable


def summarise(calls: Iterable[dict[str, Any]], prices: PriceTable, *, large_model: str | None = None) -> dict[str, Any]:
    """Per task and overall. `large_model` prices the all-large counterfactual (default: each
    task's own upstream model, as logged)."""
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for call in calls:
        by_task[call["task"]].append(call)
    tasks = {name: _task_stats(rows, prices, large_model) for name, rows in sorted(by_task.items())}
    total: dict[str, Any] = {"calls": sum(t["calls"] for t in tasks.values())}
    for key in ("escalated", "escalation_failed", "local_cost", "upstream_cost", "actual_cost", "all_large_cost"):
        values = [t[key] for t in tasks.values() if t[key] is not None]
        total[key] = sum(values) if values else None
    total["escalation_rate"] = total["escalated"] / total["calls"] if total["calls"] else 0.0
    total["savings"] = _savings(total["all_large_cost"], total["actual_cost"])
    return {"tasks": tasks, "total": total}


def _task_stats(rows: list[dict[str, Any]], prices: PriceTable, large_model: str | None) -> dict[str, Any]:
    escalated = [r for r in rows if r["escalated"]]
    local_seconds = sum(r["local_cpu_s"] or 0.0 for r in rows)
    upstream_costs = [cost for r in escalated if (cost := _upstream_cost(r, prices)) is not None]
    model = large_model or next((r["upstream_model"] for r in escalated if r["upstream_model"]), None)
    all_large = _all_large_cost(rows, escalated, prices, model)
    local_cost = prices.local_cost(local_seconds)
    upstream_cost = sum(upstream_costs) if upstream_costs else (0.0 if not escalated else None)
    actual = local_cost + upstream_cost if upstream_cost is not None else None
    judged = [r for r in rows if r.get("feedback") is not None]
    correct = sum(_matches(r["final_answer"], r["feedback"]) for r in judged)
    return {
        "calls": len(rows),
        "escalated": len(escalated),
        "escalation_rate": len(escalated) / len(rows),
        "escalation_failed": sum(1 for r in rows if r["escalation_failed"]),
        "sources": {s: sum(1 for r in rows if r["source"] == s) for s in sorted({r["source"] for r in rows})},
        "local_cpu_s": local_seconds,
        "local_cost": local_cost,
        "upstream_model": model,
        "upstream_cost": upstream_cost,
        "actual_cost": actual,
        "all_large_cost": all_large,
        "savings": _savings(all_large, actual),
        "with_feedback": len(judged),
        "accuracy": correct / len(judged) if judged else None,
    }


def _upstream_cost(row: dict[str, Any], prices: PriceTable) -> float | None:
    """The cost logged with the call; else its logged tokens at today's prices (an upstream that
    had no price when it was called, a local server for instance, priced later in prices.yaml)."""
    if row["upstream_cost"] is not None:
        return row["upstream_cost"]
    if row["upstream_model"] is None or row["upstream_prompt_tokens"] is None:
        return None
    return prices.upstream_cost(row["upstream_model"], row["upstream_prompt_tokens"], row["upstream_completion_tokens"] or 0)


def _all_large_cost(rows, escalated, prices: PriceTable, model: str | None) -> float | None:
    """Every call sent upstream: escalated calls at their logged tokens; the others at their own
    estimate of the upstream request (`upstream_prompt_estimate`) when logged, else at the mean
    tokens of the escalated ones, else at the local token counts. Output tokens of calls never
    sent are the escalated calls' mean (else none)."""
    if model is None:
        return None
    with_tokens = [r for r in escalated if r["upstream_prompt_tokens"] is not None]
    mean_in = sum(r["upstream_prompt_tokens"] for r in with_tokens) / len(with_tokens) if with_tokens else None
    mean_out = sum(r["upstream_completion_tokens"] or 0 for r in with_tokens) / len(with_tokens) if with_tokens else None
    total = 0.0
    for r in rows:
        if r["escalated"] and r["upstream_prompt_tokens"] is not None:
            tokens_in, tokens_out = r["upstream_prompt_tokens"], r["upstream_completion_tokens"] or 0
        elif r.get("upstream_prompt_estimate") is not None:
            tokens_in, tokens_out = r["upstream_prompt_estimate"], mean_out or 0
        elif mean_in is not None:
            tokens_in, tokens_out = mean_in, mean_out or 0
        else:
            tokens_in, tokens_out = r["prompt_tokens"] or 0, r["completion_tokens"] or 0
        cost = prices.upstream_cost(model, int(tokens_in), int(tokens_out))
        if cost is None:
            return None
        total += cost
    return total


def _savings(all_large: float | None, actual: float | None) -> float | None:
    if all_large is None or actual is None or all_large == 0:
        return None
    return 1 - actual / all_large


def _matches(answer: Any, feedback: Any) -> bool:
    """Feedback is a corrected label (a string or {"label": …}), labels or fields (as the server stores them)."""
    if isinstance(feedback, dict):
        for key in ("label", "labels", "fields"):
            if key in feedback:
                return answer == feedback[key]
    return answer == feedback
