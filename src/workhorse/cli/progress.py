"""Progress of a long job on stderr, so that stdout stays clean for answers and JSON.

    with progress("banking on banking77:test", total=3080) as bar:
        for batch in batches:
            ...
            bar.advance(len(batch))

On a terminal: a live bar with the count, the rate and the time left. Elsewhere (CI logs, a file):
a plain line every few percent, and at least every half minute, with the same figures.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TextIO, TypeVar

T = TypeVar("T")
R = TypeVar("R")
PLAIN_STEP = 0.05  # a plain line each time this share of the total is done
PLAIN_EVERY_S = 30.0  # … and at least this often while the job runs


class Progress:
    def __init__(self, label: str, total: int | None, unit: str, stream: TextIO) -> None:
        self.label = label
        self.total = total
        self.unit = unit
        self.done = 0
        self._before = 0  # done before this run (a resumed job): not part of its rate
        self._stream = stream
        self._started = time.monotonic()
        self._next_share = PLAIN_STEP
        self._last_line = self._started
        self._live = None
        self.detail = ""  # a figure the job reports as it goes (a training loss), shown after the rate
        if stream.isatty():
            self._live = _live_bar(stream, unit)
            self._live.start()
            self._bar = self._live.add_task(label, total=total, detail="")

    def advance(self, n: int = 1, *, detail: str | None = None) -> None:
        self.done += n
        if detail is not None:
            self.detail = detail
        if self._live is not None:
            self._live.update(self._bar, advance=n, detail=self.detail)
            return
        now = time.monotonic()
        share = self.done / self.total if self.total else None
        if (share is not None and share >= self._next_share) or now - self._last_line >= PLAIN_EVERY_S:
            self._line(now)
            if share is not None:
                while self._next_share <= share:
                    self._next_share = round(self._next_share + PLAIN_STEP, 9)  # 20 × 0.05 is 1.0, not 1.0000000000000002

    def already(self, n: int) -> None:
        """Work a resumed job did before: counted as done, left out of the rate and the ETA."""
        self.done += n
        self._before += n
        if self._live is not None:
            self._live.reset(self._bar, completed=self.done, total=self.total)

    def rate(self) -> float:
        elapsed = time.monotonic() - self._started
        return (self.done - self._before) / elapsed if elapsed > 0 else 0.0

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()

    def _line(self, now: float) -> None:
        self._last_line = now
        rate = self.rate()
        if self.total:
            left = (self.total - self.done) / rate if rate > 0 else None
            eta = f", {_clock(left)} left" if left is not None else ""
            text = f"{self.label}: {self.done:,}/{self.total:,} ({100 * self.done / self.total:.0f} %), {rate:,.1f} {self.unit}/s{eta}"
        else:
            text = f"{self.label}: {self.done:,} {self.unit}, {rate:,.1f} {self.unit}/s"
        if self.detail:
            text += f", {self.detail}"
        print(text, file=self._stream, flush=True)


@contextmanager
def progress(label: str, total: int | None = None, *, unit: str = "items", stream: TextIO | None = None) -> Iterator[Progress]:
    bar = Progress(label, total, unit, stream or sys.stderr)
    try:
        yield bar
    finally:
        bar.close()


def in_batches(run: Callable[[list[T]], list[R]], items: Sequence[T], *, batch: int, label: str) -> list[R]:
    """`run` over `items`, `batch` at a time, with progress; the outputs in order."""
    outputs: list[R] = []
    with progress(label, total=len(items)) as bar:
        for start in range(0, len(items), batch):
            chunk = list(items[start : start + batch])
            outputs += run(chunk)
            bar.advance(len(chunk))
    return outputs


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _live_bar(stream: TextIO, unit: str):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, ProgressColumn, TextColumn, TimeRemainingColumn
    from rich.progress import Progress as RichProgress
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task) -> Text:  # type: ignore[no-untyped-def]
            speed = task.finished_speed or task.speed
            return Text(f"{speed:,.1f} {unit}/s" if speed else f"– {unit}/s")

    return RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), Rate(), TimeRemainingColumn(),
                        TextColumn("{task.fields[detail]}"), console=Console(file=stream), transient=True)
