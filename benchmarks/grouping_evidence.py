"""Every varying token position the structural grouping meets, with what the labels say it is.

The evidence thresholds (`workhorse.logparse.grouping.Evidence`) were chosen from this list: for
each position where a group's lines differ, its number of different tokens, the lines it was seen
on, whether the labels keep it as a word or make it a variable, and what the rules decided. Run it
on data you do not score on (the shared eight Loghub-2k systems, generated dpkg logs), never on the
systems you report.

    python benchmarks/grouping_evidence.py /work/shared/datasets/loghub_2k --dpkg 5000
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from workhorse.evals.dpkg_log import generate
from workhorse.evals.loghub import load_system, systems
from workhorse.logparse import grouping
from workhorse.logparse.template import WILDCARD, normalize


def positions(name: str, contents: list[str], truth: list[str]) -> list[dict]:
    """The varying positions met while grouping `contents`, each with the labels' verdict."""
    truth_of: dict[str, str] = {}
    for content, template in zip(contents, truth, strict=True):
        truth_of.setdefault(normalize(content), template)
    found: list[dict] = []
    decide = grouping._is_value

    def spy(lines, position, shapes, evidence):
        value = decide(lines, position, shapes, evidence)
        literal = variable = 0
        for line in lines:
            tokens = normalize(truth_of.get(line.content, "")).split(" ")
            if len(tokens) == len(line.spans):
                variable += WILDCARD in tokens[position]
                literal += WILDCARD not in tokens[position]
        found.append({"system": name, "labels": "word" if literal > variable else "variable", "distinct": len(shapes),
                      "lines": sum(line.weight for line in lines), "decided": "value" if value else "word"})
        return value

    grouping._is_value = spy
    try:
        grouping.group_lines(Counter(normalize(c) for c in contents))
    finally:
        grouping._is_value = decide
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, nargs="?", help="a folder laid out like Loghub-2k")
    parser.add_argument("--dpkg", type=int, default=0, help="also this many lines of a generated dpkg log")
    args = parser.parse_args()
    rows = []
    if args.data:
        for name in systems(args.data):
            system = load_system(args.data, name)
            rows += positions(name, system.contents, system.truth_templates)
    if args.dpkg:
        lines, truth = generate(args.dpkg, seed=1)
        rows += positions("dpkg", [line.split(" ", 2)[2] for line in lines], truth)
    for labels in ("word", "variable"):
        chosen = sorted((r for r in rows if r["labels"] == labels), key=lambda r: (-r["distinct"], -r["lines"]))
        print(f"positions the labels keep as a {labels}: {len(chosen)}")
        for r in chosen[:30]:
            print(f"  {r['system']:12s} {r['distinct']:4d} different in {r['lines']:5d} lines "
                  f"({r['distinct'] / r['lines']:.2f}); decided: {r['decided']}")


if __name__ == "__main__":
    main()
