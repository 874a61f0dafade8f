"""`workhorse bench logs`: log parsing accuracy and speed per system, beside Drain (drain3).

For each system of a Loghub-style directory, from an empty template cache:
- cold: every line parsed in order, `block` lines at a time (their unseen lines grouped, the model
  writing one template per group; `block` 1: line by line), timed as a whole and up to the first
  `first` lines (a new system's first lines: what a user waits for);
- warm: the same lines again, the cache alone (no model), timed `repeats` times;
- accuracy (GA, PA, FGA, FTA) of the cold pass, each line in its template's final group;
- drain3 on the same contents, with one generic configuration.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from workhorse.errors import WorkhorseError
from workhorse.evals.loghub import load_system, systems
from workhorse.logparse.cache import TemplateCache
from workhorse.logparse.grouping import EVIDENCE, Evidence
from workhorse.logparse.header import LogFormat
from workhorse.logparse.metrics import parsing_metrics
from workhorse.logparse.model import TemplateModel
from workhorse.logparse.parser import MODEL_BELOW, LogParser
from workhorse.logparse.refine import JOINING, Joining

METRICS = ("GA", "PA", "FGA", "FTA")


BLOCK = 1000  # as `workhorse logs parse` reads a file
FIRST = 10_000


def bench_system(root: Path, name: str, model: TemplateModel | None, *, repeats: int = 3, drain: bool = True,
                 block: int = BLOCK, first: int = FIRST, evidence: Evidence = EVIDENCE,
                 model_below: int | None = MODEL_BELOW, ports: Literal["with-address", "apart"] = "with-address",
                 joining: Joining = JOINING) -> dict[str, Any]:
    """One system from an empty cache (`model` None: the rules alone, no model; `model_below`:
    see `LogParser`)."""
    system = load_system(root, name)
    log_format = LogFormat.parse(system.log_format)
    cache = TemplateCache()
    calls_before = model.calls if model is not None else 0
    tokens_before = model.prompt_tokens if model is not None else 0
    parser = LogParser(log_format, cache, model, evidence=evidence, model_below=model_below, ports=ports, joining=joining)
    first = min(first, len(system.lines))
    parsed, first_s = [], 0.0
    started = time.perf_counter()
    for line in parser.parse(system.lines, block=block):
        parsed.append(line)
        if len(parsed) == first:
            first_s = time.perf_counter() - started
    cold_s = time.perf_counter() - started
    final = [cache.resolve(line.template_id) for line in parsed]
    scores = parsing_metrics(system.truth_templates, [t.id for t in final], [t.text for t in final])

    warm = []
    for _ in range(repeats):
        warm_parser = LogParser(log_format, cache, None)
        started = time.perf_counter()
        for _line in warm_parser.parse(system.lines):
            pass
        warm.append(len(system.lines) / (time.perf_counter() - started))

    result: dict[str, Any] = {
        "lines": len(system.lines),
        "true_templates": scores["n_true_templates"],
        "templates": scores["n_predicted_templates"],
        "model_calls": (model.calls if model is not None else 0) - calls_before,
        "model_prompt_tokens": (model.prompt_tokens if model is not None else 0) - tokens_before,
        "lines_per_s_cold": len(system.lines) / cold_s,
        "first_lines": first,
        "seconds_first_lines": first_s,
        "block": block,
        "lines_per_s_warm": statistics.median(warm) if warm else None,
        "lines_per_s_warm_runs": warm,
        **{key: scores[key.lower()] for key in METRICS},
    }
    if drain:
        result["drain3"] = _drain(system.contents, system.truth_templates)
    return result


def _drain(contents: Sequence[str], truth: Sequence[str]) -> dict[str, Any]:
    try:
        from workhorse.logparse.drain_baseline import run_drain
    except ImportError:
        raise WorkhorseError("the Drain baseline needs drain3", "run scripts/setup --bench (or pip install drain3==0.9.11)") from None
    found = run_drain(contents)
    scores = parsing_metrics(truth, found.groups, found.templates)
    return {
        **{key: scores[key.lower()] for key in METRICS},
        "templates": found.n_clusters,
        "lines_per_s": len(contents) / found.seconds if found.seconds else None,
    }


def run(
    roots: Path | Sequence[Path], model: TemplateModel | None, *, names: Sequence[str] | None = None, repeats: int = 3,
    block: int = BLOCK, first: int = FIRST, model_below: int | None = MODEL_BELOW, ports_apart: Sequence[str] = (),
    log: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Every system of `roots` (folders laid out like Loghub-2k), or those in `names`; those in
    `ports_apart` parsed with an address and its port as two values (their deployment's convention)."""
    roots = [roots] if isinstance(roots, Path) else list(roots)
    report: dict[str, Any] = {"data": [str(r) for r in roots], "block": block, "model_below": model_below, "systems": {}}
    for root, name in system_paths(roots, names):
        result = bench_system(root, name, model, repeats=repeats, block=block, first=first, model_below=model_below,
                              ports="apart" if name in ports_apart else "with-address")
        result["ports"] = "apart" if name in ports_apart else "with-address"
        report["systems"][name] = result
        log(f"{name}: GA {result['GA']:.3f} PA {result['PA']:.3f} FGA {result['FGA']:.3f} FTA {result['FTA']:.3f}, "
            f"{result['model_calls']} model calls for {result['true_templates']} templates, "
            f"{result['lines_per_s_cold']:,.1f} lines/s cold (first {result['first_lines']} in {result['seconds_first_lines']:.1f} s), "
            f"{result['lines_per_s_warm']:,.0f} lines/s warm (drain3 GA {result['drain3']['GA']:.3f} PA {result['drain3']['PA']:.3f})")
    rows = list(report["systems"].values())
    report["average"] = {
        **{key: statistics.mean(r[key] for r in rows) for key in METRICS},
        "lines_per_s_warm": statistics.mean(r["lines_per_s_warm"] for r in rows),
        "lines_per_s_cold": statistics.mean(r["lines_per_s_cold"] for r in rows),
        "seconds_first_lines": statistics.mean(r["seconds_first_lines"] for r in rows),
        "model_calls": sum(r["model_calls"] for r in rows),
        "true_templates": sum(r["true_templates"] for r in rows),
        "model_calls_per_true_template": sum(r["model_calls"] for r in rows) / max(1, sum(r["true_templates"] for r in rows)),
        "drain3": {
            **{key: statistics.mean(r["drain3"][key] for r in rows) for key in METRICS},
            "lines_per_s": statistics.mean(r["drain3"]["lines_per_s"] or 0 for r in rows),
        },
    }
    return report


def system_paths(roots: Sequence[Path], names: Sequence[str] | None) -> list[tuple[Path, str]]:
    """(folder, system) for every system of the folders, or for those named (each found in the
    first folder that has it)."""
    found = [(root, name) for root in roots for name in systems(root)]
    if names is None:
        return found
    chosen = []
    for name in names:
        match = next((row for row in found if row[1] == name), None)
        if match is None:
            raise WorkhorseError(f"no system {name!r} in {', '.join(map(str, roots))}",
                                 f"choose among {', '.join(n for _, n in found)}")
        chosen.append(match)
    return chosen
