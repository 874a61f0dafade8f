"""`workhorse logs stats`: escalation rate, where answers came from, accuracy where feedback
exists, and the bill — actual cost against sending every call to the large model."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from workhorse.calllog.prices import PriceTable
from workhorse.calllog.totals import CallTotals, savings

_SUMMED = ("escalated", "escalation_failed", "local_cost", "upstream_cost", "actual_cost", "all_large_cost")


def summarise(calls: Iterable[dict[str, Any]], prices: PriceTable, *, large_model: str | None = None) -> dict[str, Any]:
    """Per task and overall. `large_model` prices the all-large counterfactual (default: each
    task's own upstream model, as logged)."""
    by_task: dict[str, CallTotals] = defaultdict(CallTotals)
    for call in calls:
        by_task[call["task"]].add(call)
    tasks = {name: totals.report(prices, large_model=large_model) for name, totals in sorted(by_task.items())}
    total: dict[str, Any] = {"calls": sum(t["calls"] for t in tasks.values())}
    for key in _SUMMED:
        values = [t[key] for t in tasks.values() if t[key] is not None]
        total[key] = sum(values) if values else None
    total["escalation_rate"] = total["escalated"] / total["calls"] if total["calls"] else 0.0
    total["savings"] = savings(total["all_large_cost"], total["actual_cost"])
    return {"tasks": tasks, "total": total}
