"""The ledger's arithmetic: sums over calls from which every figure of `logs stats` and the
console's overview follows — counts by source, escalations, local engine time, the upstream bill,
what sending everything to the large model would have cost, accuracy where feedback exists, and
latency percentiles.

Sums merge: the call log keeps one `CallTotals` per task, version and hour (the rollup, written
with the calls), so a page over a million calls adds up a few thousand of them instead of reading
every row. Prices are applied when the figures are read, so a price added later applies to the
calls logged before it, as in `logs stats`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from workhorse.calllog.prices import PriceTable

# Latency histogram buckets grow by 2^(1/8) (about 9 %): a percentile read from them is within
# that of the exact one, and a whole day of a task's calls fits in a few dozen buckets.
_BUCKETS_PER_DOUBLING = 8
_SMALLEST_MS = 0.01


def latency_bucket(latency_ms: float) -> int:
    return math.ceil(_BUCKETS_PER_DOUBLING * math.log2(max(latency_ms, _SMALLEST_MS)))


def bucket_upper_ms(bucket: int) -> float:
    return 2 ** (bucket / _BUCKETS_PER_DOUBLING)


@dataclass
class CallTotals:
    calls: int = 0
    sources: dict[str, int] = field(default_factory=dict)
    escalated: int = 0
    escalation_failed: int = 0
    local_cpu_s: float = 0.0
    upstream_model: str | None = None  # the first upstream model seen: the all-large counterfactual's price
    upstream_cost_logged: float = 0.0  # escalated calls whose cost was logged with them
    upstream_costed: int = 0
    # Escalated calls logged without a cost but with tokens, by upstream model: priced when read.
    upstream_unpriced: dict[str, list[int]] = field(default_factory=dict)  # model → [prompt, completion]
    # The all-large counterfactual, in three parts (see `all_large_cost`).
    escalated_prompt: int = 0  # escalated calls with upstream tokens
    escalated_completion: int = 0
    escalated_with_tokens: int = 0
    estimated_prompt: int = 0  # other calls with an estimate of the upstream request
    estimated: int = 0
    other_prompt: int = 0  # the rest: their local token counts
    other_completion: int = 0
    others: int = 0
    judged: int = 0  # calls with feedback
    correct: int = 0  # … whose final answer matches it
    latency: dict[int, int] = field(default_factory=dict)  # histogram: bucket → calls

    # -- building ----------------------------------------------------------------------------
    def add(self, call: dict[str, Any]) -> None:
        """One call, as the log stores it (decoded JSON columns)."""
        self.calls += 1
        self.sources[call["source"]] = self.sources.get(call["source"], 0) + 1
        self.escalation_failed += bool(call.get("escalation_failed"))
        self.local_cpu_s += call.get("local_cpu_s") or 0.0
        if call.get("latency_ms") is not None:
            bucket = latency_bucket(call["latency_ms"])
            self.latency[bucket] = self.latency.get(bucket, 0) + 1
        escalated = bool(call.get("escalated"))
        prompt, completion = call.get("upstream_prompt_tokens"), call.get("upstream_completion_tokens") or 0
        if escalated:
            self._add_escalated(call, prompt, completion)
        if escalated and prompt is not None:
            self.escalated_prompt += prompt
            self.escalated_completion += completion
            self.escalated_with_tokens += 1
        elif call.get("upstream_prompt_estimate") is not None:
            self.estimated_prompt += call["upstream_prompt_estimate"]
            self.estimated += 1
        else:
            self.other_prompt += call.get("prompt_tokens") or 0
            self.other_completion += call.get("completion_tokens") or 0
            self.others += 1
        if call.get("feedback") is not None:
            self.judge(call["final_answer"], call["feedback"], +1)

    def _add_escalated(self, call: dict[str, Any], prompt: int | None, completion: int) -> None:
        self.escalated += 1
        model = call.get("upstream_model")
        self.upstream_model = self.upstream_model or model
        if call.get("upstream_cost") is not None:
            self.upstream_cost_logged += call["upstream_cost"]
            self.upstream_costed += 1
        elif model is not None and prompt is not None:
            tokens = self.upstream_unpriced.setdefault(model, [0, 0])
            tokens[0] += prompt
            tokens[1] += completion

    def judge(self, final_answer: Any, feedback: Any, sign: int) -> None:
        """Count a correction (+1), or take back one that a newer correction replaces (-1)."""
        self.judged += sign
        self.correct += sign * matches(final_answer, feedback)

    def merge(self, other: CallTotals) -> CallTotals:
        self.calls += other.calls
        for source, count in other.sources.items():
            self.sources[source] = self.sources.get(source, 0) + count
        for name in ("escalated", "escalation_failed", "local_cpu_s", "upstream_cost_logged", "upstream_costed",
                     "escalated_prompt", "escalated_completion", "escalated_with_tokens", "estimated_prompt",
                     "estimated", "other_prompt", "other_completion", "others", "judged", "correct"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.upstream_model = self.upstream_model or other.upstream_model
        for model, (prompt, completion) in other.upstream_unpriced.items():
            tokens = self.upstream_unpriced.setdefault(model, [0, 0])
            tokens[0] += prompt
            tokens[1] += completion
        for bucket, count in other.latency.items():
            self.latency[bucket] = self.latency.get(bucket, 0) + count
        return self

    # -- storing -----------------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> CallTotals:
        values = json.loads(text)
        values["latency"] = {int(bucket): count for bucket, count in values.get("latency", {}).items()}
        return cls(**values)

    # -- reading -----------------------------------------------------------------------------
    def upstream_cost(self, prices: PriceTable) -> float | None:
        """The logged costs, and the unpriced calls' tokens at today's prices. None when calls
        were escalated and none of them can be priced."""
        later = [prices.upstream_cost(model, prompt, completion) for model, (prompt, completion) in self.upstream_unpriced.items()]
        priced = [cost for cost in later if cost is not None]
        if not self.upstream_costed and not priced:
            return 0.0 if not self.escalated else None
        return self.upstream_cost_logged + sum(priced)

    def all_large_cost(self, prices: PriceTable, model: str | None = None) -> float | None:
        """Every call sent upstream: escalated calls at their logged tokens; the others at their own
        estimate of the upstream request when logged, else at the mean tokens of the escalated
        ones, else at their local token counts. Output tokens of calls never sent are the escalated
        calls' mean (else none). None without a priced large model."""
        model = model or self.upstream_model
        if model is None:
            return None
        sent = self.escalated_with_tokens
        mean_in = self.escalated_prompt / sent if sent else None
        mean_out = self.escalated_completion / sent if sent else 0.0
        prompt = self.escalated_prompt + self.estimated_prompt
        completion = self.escalated_completion + self.estimated * mean_out
        if mean_in is not None:
            prompt += self.others * mean_in
            completion += self.others * mean_out
        else:
            prompt += self.other_prompt
            completion += self.other_completion
        return prices.upstream_cost(model, prompt, completion)

    def latency_percentile(self, fraction: float) -> float | None:
        """The latency below which `fraction` of the calls fell, to the histogram's resolution."""
        total = sum(self.latency.values())
        if not total:
            return None
        rank, seen = fraction * total, 0
        for bucket in sorted(self.latency):
            seen += self.latency[bucket]
            if seen >= rank:
                return bucket_upper_ms(bucket)
        return bucket_upper_ms(max(self.latency))

    def report(self, prices: PriceTable, *, large_model: str | None = None) -> dict[str, Any]:
        """The figures `logs stats` prints for a task."""
        upstream_cost = self.upstream_cost(prices)
        local_cost = prices.local_cost(self.local_cpu_s)
        actual = local_cost + upstream_cost if upstream_cost is not None else None
        all_large = self.all_large_cost(prices, large_model)
        return {
            "calls": self.calls,
            "escalated": self.escalated,
            "escalation_rate": self.escalated / self.calls if self.calls else 0.0,
            "escalation_failed": self.escalation_failed,
            "sources": dict(sorted(self.sources.items())),
            "local_cpu_s": self.local_cpu_s,
            "local_cost": local_cost,
            "upstream_model": large_model or self.upstream_model,
            "upstream_cost": upstream_cost,
            "actual_cost": actual,
            "all_large_cost": all_large,
            "savings": savings(all_large, actual),
            "with_feedback": self.judged,
            "accuracy": self.correct / self.judged if self.judged else None,
            "p50_ms": self.latency_percentile(0.5),
            "p99_ms": self.latency_percentile(0.99),
        }


def savings(all_large: float | None, actual: float | None) -> float | None:
    if all_large is None or actual is None or all_large == 0:
        return None
    return 1 - actual / all_large


def matches(answer: Any, feedback: Any) -> bool:
    return answer == corrected_answer(feedback)


def corrected_answer(feedback: Any) -> Any:
    """The right answer a correction gives: a corrected label (a string or {"label": …}), labels or
    fields (as the server stores them)."""
    if isinstance(feedback, dict):
        for key in ("label", "labels", "fields"):
            if key in feedback:
                return feedback[key]
    return feedback
