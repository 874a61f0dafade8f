"""Running totals of a pipeline's answers: how many, from where, and what they cost."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from workhorse.calllog.prices import PriceTable


@dataclass
class Tally:
    prices: PriceTable
    items: int = 0
    sources: Counter[str] = field(default_factory=Counter)
    escalated: int = 0  # sent upstream (answered or failed)
    escalation_failed: int = 0
    escalation_blocked: int = 0  # the policy chose them, the task's privacy kept them local
    local_cpu_s: float = 0.0
    upstream_cost: float = 0.0
    unpriced_upstream_calls: int = 0  # answered by an upstream without a price
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, *, source: str, escalated: bool, failed: bool, blocked: bool, local_cpu_s: float,
            upstream_cost: float | None) -> None:
        with self._lock:
            self.items += 1
            self.sources[source] += 1
            self.escalated += escalated
            self.escalation_failed += failed
            self.escalation_blocked += blocked
            self.local_cpu_s += local_cpu_s
            if escalated and not failed:
                if upstream_cost is None:
                    self.unpriced_upstream_calls += 1
                else:
                    self.upstream_cost += upstream_cost

    def summary(self) -> dict[str, Any]:
        local_cost = self.prices.local_cost(self.local_cpu_s)
        return {
            "items": self.items,
            "sources": dict(sorted(self.sources.items())),
            "escalated": self.escalated,
            "escalation_failed": self.escalation_failed,
            "escalation_blocked": self.escalation_blocked,
            "local_cpu_s": self.local_cpu_s,
            "local_cost": local_cost,
            "upstream_cost": self.upstream_cost,
            "unpriced_upstream_calls": self.unpriced_upstream_calls,
            "cost": local_cost + self.upstream_cost,
        }
