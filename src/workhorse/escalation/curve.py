"""The accuracy–escalation-rate curve: escalate the k least confident answers, for every k.

With a perfect upstream (the reference labels) this is the upper bound of what escalation can
buy; with a real upstream, its answers replace the escalated ones."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def escalation_curve(
    truth: Sequence[Any],
    local: Sequence[Any],
    confidence: Sequence[float],
    *,
    upstream: Sequence[Any] | None = None,
    upstream_name: str = "perfect",
    points: int = 21,
    max_rate: float = 1.0,
) -> list[dict[str, Any]]:
    """Points at evenly spaced escalation rates in [0, max_rate]. `upstream[i]` is the upstream's
    answer for item i (None where it was not asked or failed: the local answer stands)."""
    n = len(truth)
    order = np.argsort(np.asarray(confidence, dtype=np.float64), kind="stable")  # least confident first
    local_right = np.array([a == t for a, t in zip(local, truth, strict=True)])
    if upstream is None:
        upstream_right = np.ones(n, dtype=bool)
    else:
        upstream_right = np.array(
            [(u == t) if u is not None else l for u, t, l in zip(upstream, truth, local_right, strict=True)]
        )
    # gain[i]: how escalating item i changes the number right
    gain = upstream_right.astype(int) - local_right.astype(int)
    cumulative = np.concatenate([[0], np.cumsum(gain[order])])
    out = []
    for rate in np.linspace(0.0, max_rate, points):
        k = int(round(rate * n))
        out.append({"escalation_rate": k / n, "accuracy": float((local_right.sum() + cumulative[k]) / n), "upstream": upstream_name})
    return out


def rate_for_accuracy(truth: Sequence[Any], local: Sequence[Any], confidence: Sequence[float], target: float) -> float:
    """The smallest share of items that a perfect upstream must answer, least confident first, for
    the accuracy to reach `target` (1.0 when only answering everything does: a confident mistake)."""
    n = len(truth)
    if n == 0:
        return 0.0
    order = np.argsort(np.asarray(confidence, dtype=np.float64), kind="stable")
    right = np.array([a == t for a, t in zip(local, truth, strict=True)])
    needed = int(np.ceil(target * n - 1e-9))  # items right; the epsilon keeps 0.98 × 100 at 98
    # right after escalating the k least confident: those right already, plus the k's wrong ones
    fixed = np.concatenate([[0], np.cumsum(~right[order])])
    k = int(np.argmax(right.sum() + fixed >= needed))  # the first k that reaches it (k = n always does)
    return k / n


def rate_at_threshold(confidence: Sequence[float], threshold: float) -> float:
    """The share of answers a confidence threshold escalates (the policy's operating point)."""
    values = np.asarray(confidence, dtype=np.float64)
    return float((values < threshold).mean()) if len(values) else 0.0


def accuracy_at_rate(curve: list[dict[str, Any]], rate: float) -> float:
    """Accuracy at the curve point nearest to `rate`."""
    return min(curve, key=lambda p: abs(p["escalation_rate"] - rate))["accuracy"]


def plot(curves: list[list[dict[str, Any]]], path: str, *, operating_rate: float | None, title: str) -> None:
    """A PNG of the curves (needs matplotlib: pip install 'workhorse[plot]')."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        from workhorse.errors import WorkhorseError

        raise WorkhorseError("drawing the curve needs matplotlib", "pip install 'workhorse[plot]', or leave out --png") from None
    figure, axes = plt.subplots(figsize=(6, 4), dpi=120)
    for curve in curves:
        axes.plot([100 * p["escalation_rate"] for p in curve], [100 * p["accuracy"] for p in curve],
                  marker=".", label=f"upstream: {curve[0]['upstream']}")
    if operating_rate is not None:
        axes.axvline(100 * operating_rate, color="grey", linestyle="--", label=f"policy: {100 * operating_rate:.1f} %")
    axes.set_xlabel("escalated, % of items")
    axes.set_ylabel("accuracy, %")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
