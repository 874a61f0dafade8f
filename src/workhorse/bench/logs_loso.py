"""`workhorse bench logs --loso`: leave-one-system-out figures for a rule set with parameters.

A threshold chosen on the systems it is scored on fits them; the honest figure for a system is
the one it gets with the parameters chosen on all the *other* systems. For each parameter set of
a grid, every system is parsed once from an empty cache; then, for each system, the set with the
best mean score ((GA + PA) / 2) on the others is chosen and that system's scores with it are
reported, beside its scores with the shipped defaults.

The parameters are those of the rules that decide from evidence across lines
(`grouping.Evidence`) and of the joins of a new template with cached ones (`refine.Joining`); the
runs use the rules without the model, so a grid over 16 systems takes a minute, and a parameter
cannot lean on what the model happens to write.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from workhorse.bench.logs_bench import BLOCK, bench_system, system_paths
from workhorse.errors import WorkhorseError
from workhorse.logparse.grouping import EVIDENCE, Evidence
from workhorse.logparse.refine import JOINING, Joining


@dataclass(frozen=True)
class RuleSet:
    """The parameters of the rules: when a varying position is a value (`grouping.Evidence`) and
    when a new template joins cached ones (`refine.Joining`)."""

    evidence: Evidence = EVIDENCE
    joining: Joining = JOINING

    def describe(self) -> dict[str, Any]:
        return {**asdict(self.evidence), **asdict(self.joining)}


DEFAULTS = RuleSet()
# Around the defaults: the evidence thresholds halved and doubled together, then each joining
# threshold one lower and one higher with the evidence at its defaults.
GRID = (
    *(RuleSet(Evidence(open_distinct=d, min_distinct=m, open_share=EVIDENCE.open_share))
      for d in (8, 16, 32) for m in (3, 5, 8)),
    *(RuleSet(joining=Joining(shared_words=w, siblings=JOINING.siblings)) for w in (2, 4)),
    *(RuleSet(joining=Joining(shared_words=JOINING.shared_words, siblings=k)) for k in (2, 4)),
)


def _score(result: dict[str, Any]) -> float:
    return (result["GA"] + result["PA"]) / 2


def loso(
    roots: Sequence[Path], *, names: Sequence[str] | None = None, grid: Sequence[RuleSet] = GRID, block: int = BLOCK,
    log: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Per system: the parameters chosen on the others and its scores with them (and with the defaults)."""
    chosen_systems = system_paths(roots, names)
    if len(chosen_systems) < 2:
        raise WorkhorseError("leave-one-system-out needs two systems at least", "pass more systems (or a folder with more)")
    grid = list(grid)
    if DEFAULTS not in grid:
        grid.append(DEFAULTS)
    results: dict[str, list[dict[str, Any]]] = {}
    for root, name in chosen_systems:
        results[name] = [bench_system(root, name, None, repeats=0, drain=False, block=block, evidence=r.evidence, joining=r.joining)
                         for r in grid]
        log(f"{name}: (GA + PA) / 2 over the grid {min(map(_score, results[name])):.3f}–{max(map(_score, results[name])):.3f}")
    report: dict[str, Any] = {"grid": [r.describe() for r in grid], "defaults": DEFAULTS.describe(), "systems": {}}
    default = grid.index(DEFAULTS)
    for name in results:
        others = [other for other in results if other != name]
        means = [statistics.mean(_score(results[o][i]) for o in others) for i in range(len(grid))]
        best = max(range(len(grid)), key=lambda i: (means[i], i == default))  # a tie keeps the defaults
        held, shipped = results[name][best], results[name][default]
        report["systems"][name] = {
            "chosen": grid[best].describe(),
            "GA": held["GA"], "PA": held["PA"], "FGA": held["FGA"], "FTA": held["FTA"],
            "templates": held["templates"], "true_templates": held["true_templates"],
            "defaults": {"GA": shipped["GA"], "PA": shipped["PA"], "FGA": shipped["FGA"], "FTA": shipped["FTA"]},
        }
    rows = list(report["systems"].values())
    report["average"] = {
        **{key: statistics.mean(r[key] for r in rows) for key in ("GA", "PA", "FGA", "FTA")},
        "defaults": {key: statistics.mean(r["defaults"][key] for r in rows) for key in ("GA", "PA", "FGA", "FTA")},
    }
    return report
