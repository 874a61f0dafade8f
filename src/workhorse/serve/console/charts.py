"""Charts drawn on the server as inline SVG: no chart library, no script, nothing fetched.

Each function takes plain series and returns SVG markup with a title, axes labelled at their
ends and a legend; values are escaped. Colours come from the stylesheet (`series-N` classes),
so the charts follow the page's light or dark scheme."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from markupsafe import Markup

WIDTH, HEIGHT = 640, 200
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 24, 28


def stacked_bars(title: str, labels: Sequence[str], series: dict[str, Sequence[float]], *, unit: str = "") -> Markup:
    """One bar per label, its parts stacked in the order of `series`."""
    totals = [sum(values[i] for values in series.values()) for i in range(len(labels))]
    top = max(totals, default=0) or 1
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    step = plot_w / max(len(labels), 1)
    parts = []
    for i in range(len(labels)):
        base = 0.0
        for index, values in enumerate(series.values()):
            height = plot_h * values[i] / top
            y = TOP + plot_h - base - height
            parts.append(f'<rect class="series-{index}" x="{LEFT + i * step + 1:.1f}" y="{y:.1f}" '
                         f'width="{max(step - 2, 1):.1f}" height="{height:.1f}"><title>{escape(labels[i])}: '
                         f'{values[i]:g}{escape(unit)}</title></rect>')
            base += height
    return _frame(title, parts, labels, top, unit, list(series))


def lines(title: str, labels: Sequence[str], series: dict[str, Sequence[float | None]], *, unit: str = "",
          top: float | None = None) -> Markup:
    """One polyline per series; None leaves a gap."""
    values = [v for vs in series.values() for v in vs if v is not None]
    top = top or max(values, default=0) or 1
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    step = plot_w / max(len(labels) - 1, 1)
    parts = []
    for index, points in enumerate(series.values()):
        runs: list[list[str]] = [[]]
        for i, value in enumerate(points):
            if value is None:
                runs.append([])
                continue
            runs[-1].append(f"{LEFT + i * step:.1f},{TOP + plot_h - plot_h * min(value, top) / top:.1f}")
        for run in runs:
            if len(run) == 1:
                x, y = run[0].split(",")
                parts.append(f'<circle class="series-{index}" cx="{x}" cy="{y}" r="2.5"/>')
            elif run:
                parts.append(f'<polyline class="line series-{index}" points="{" ".join(run)}"/>')
    return _frame(title, parts, labels, top, unit, list(series))


def _frame(title: str, parts: list[str], labels: Sequence[str], top: float, unit: str, names: list[str]) -> Markup:
    plot_h = HEIGHT - TOP - BOTTOM
    axis = [
        f'<text class="title" x="{LEFT}" y="14">{escape(title)}</text>',
        f'<line class="axis" x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH - RIGHT}" y2="{TOP + plot_h}"/>',
        f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}"/>',
        f'<text class="tick" x="{LEFT - 4}" y="{TOP + 4}" text-anchor="end">{_number(top)}{escape(unit)}</text>',
        f'<text class="tick" x="{LEFT - 4}" y="{TOP + plot_h}" text-anchor="end">0</text>',
    ]
    if labels:
        axis.append(f'<text class="tick" x="{LEFT}" y="{HEIGHT - 8}">{escape(labels[0])}</text>')
        axis.append(f'<text class="tick" x="{WIDTH - RIGHT}" y="{HEIGHT - 8}" text-anchor="end">{escape(labels[-1])}</text>')
    legend = [f'<rect class="series-{i}" x="{WIDTH - RIGHT - 110 * (len(names) - i)}" y="4" width="10" height="10"/>'
              f'<text class="tick" x="{WIDTH - RIGHT - 110 * (len(names) - i) + 14}" y="13">{escape(name)}</text>'
              for i, name in enumerate(names)]
    body = "".join(axis + parts + legend)
    return Markup(f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}">{body}</svg>')


def _number(value: float) -> str:
    if value >= 1000:
        return f"{value / 1000:.3g}k"
    return f"{value:.3g}"
