"""Progress lines: counts, shares, and a resumed job's rate and ETA counting only its own work."""

from __future__ import annotations

import io
import re

from workhorse.cli.progress import Progress


def test_a_resumed_jobs_earlier_work_counts_as_done_but_not_in_its_rate():
    stream = io.StringIO()
    bar = Progress("train", 1000, "tokens", stream)
    bar.already(900)
    bar.advance(50)
    [line] = stream.getvalue().splitlines()[-1:]
    assert line.startswith("train: 950/1,000 (95 %)")
    rate = float(re.search(r"([\d,.]+) tokens/s", line).group(1).replace(",", ""))
    elapsed_rate_of_all = 950 / max(1e-9, bar._last_line - bar._started)
    assert rate < elapsed_rate_of_all / 10  # 50 tokens of this run, not the 900 before it
