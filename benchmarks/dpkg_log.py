"""Write a generated Debian dpkg log laid out as a Loghub-2k system, for `workhorse bench logs --data`.

    python benchmarks/dpkg_log.py /tmp/dpkg --lines 5000 --seed 1
    workhorse bench logs --data /tmp/dpkg

The log and its true events come from `workhorse.evals.dpkg_log` (dpkg's line shapes, made-up
packages); the folder gets `Dpkg/Dpkg_2k.log`, its structured CSV and `log_formats.json`.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from workhorse.evals.dpkg_log import generate, write_loghub


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the folder to write (Dpkg/ and log_formats.json)")
    parser.add_argument("--lines", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    folder = write_loghub(args.out, args.lines, args.seed)
    events = Counter(generate(args.lines, args.seed)[1])
    print(f"{args.lines} lines, {len(events)} events, in {folder}")


if __name__ == "__main__":
    main()
