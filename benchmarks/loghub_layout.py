"""Lay out Loghub-2k systems from a logparser checkout the way `workhorse bench logs --data` reads them.

The datasets folder holds 8 of Loghub-2k's 16 systems; the other 8 (Android, BGL, HPC, Mac,
OpenStack, Spark, Thunderbird, Windows) are a held-out check of rules chosen on the first 8.
This copies each system's raw log and corrected labels out of a git checkout of
logpai/logparser (`data/loghub_2k_corrected/`) and writes `log_formats.json` from the header
formats in its Drain benchmark settings.

    python benchmarks/loghub_layout.py /path/to/logparser /tmp/loghub_heldout
    workhorse bench logs --data /tmp/loghub_heldout --json
"""

from __future__ import annotations

import argparse
import ast
import json
import shutil
from pathlib import Path

HELD_OUT = ["Android", "BGL", "HPC", "Mac", "OpenStack", "Spark", "Thunderbird", "Windows"]
FILES = ["{name}_2k.log", "{name}_2k.log_structured_corrected.csv", "{name}_2k.log_templates_corrected.csv"]


def header_formats(checkout: Path) -> dict[str, str]:
    """System name → Loghub header format, read (not run) from the Drain benchmark script."""
    tree = ast.parse((checkout / "logparser" / "Drain" / "benchmark.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "benchmark_settings" for t in node.targets):
            settings = ast.literal_eval(node.value)
            return {name: setting["log_format"] for name, setting in settings.items()}
    raise SystemExit(f"no benchmark_settings in {checkout}/logparser/Drain/benchmark.py")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", type=Path, help="a logparser working tree")
    parser.add_argument("out", type=Path, help="the folder to write (one folder per system + log_formats.json)")
    parser.add_argument("--systems", default=",".join(HELD_OUT), help="comma-separated (default: the 8 not in the datasets folder)")
    args = parser.parse_args()
    formats = header_formats(args.checkout)
    source = args.checkout / "data" / "loghub_2k_corrected"
    layout = {}
    for name in args.systems.split(","):
        if name not in formats:
            raise SystemExit(f"{name}: no header format in the benchmark settings (known: {', '.join(sorted(formats))})")
        (args.out / name).mkdir(parents=True, exist_ok=True)
        for pattern in FILES:
            shutil.copyfile(source / name / pattern.format(name=name), args.out / name / pattern.format(name=name))
        layout[name] = {"log_file": f"{name}/{name}_2k.log", "log_format": formats[name]}
    (args.out / "log_formats.json").write_text(json.dumps(layout, indent=1), encoding="utf-8")
    print(f"{len(layout)} systems laid out in {args.out}")


if __name__ == "__main__":
    main()
