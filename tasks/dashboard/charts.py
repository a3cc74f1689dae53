"""SVG chart geometry for the dashboard (server-side: the charts need no JavaScript)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC

from tasks.dashboard.data import Share, SpeedPointLike

WIDTH, HEIGHT = 640, 240
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 16, 36
BAR_ROW = 26
BAR_LABEL = 180  # room for the rule name left of its bar
BAR_VALUE = 64  # room for the count right of it
MAX_LABEL = 26


@dataclass(frozen=True, slots=True)
class Tick:
    pos: float
    label: str
    anchor: str = "middle"  # SVG text-anchor: the end labels stay inside the chart


@dataclass(frozen=True, slots=True)
class LineChart:
    width: int
    height: int
    series: list[tuple[str, str, list[str]]]  # (name, css class, polyline point lists)
    dots: list[tuple[str, float, float, str]]  # (css class, x, y, tooltip)
    y_ticks: list[Tick]
    x_ticks: list[Tick]
    empty: bool


def seconds(value: float | None) -> str:
    """`0.42 s`, `12 s`, `3.5 min`, `2.1 h`: short and exact enough for a chart or a table."""
    if value is None:
        return "–"
    if value == 0:
        return "0 s"
    if value < 10:
        return f"{value:.2f} s"
    if value < 120:
        return f"{value:.0f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


def _nice_max(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten at or above `value` (axis top)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return float(step * power)
    return 10.0 * power


def speed_chart(points: Sequence[SpeedPointLike]) -> LineChart:
    """p50 and p95 over the buckets; a bucket without writes breaks the line (no invented
    values in between)."""
    values = [v for p in points for v in (p.p50, p.p95) if v is not None]
    top = _nice_max(max(values)) if values else 1.0
    inner_w, inner_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    n = len(points)

    def x(i: int) -> float:
        return LEFT + (inner_w * i / (n - 1) if n > 1 else inner_w / 2)

    def y(v: float) -> float:
        return TOP + inner_h * (1 - v / top)

    series = []
    dots = []
    for name, css, attr in (("p50", "p50", "p50"), ("p95", "p95", "p95")):
        runs: list[list[str]] = [[]]
        for i, p in enumerate(points):
            v = getattr(p, attr)
            if v is None:
                if runs[-1]:
                    runs.append([])
                continue
            runs[-1].append(f"{x(i):.1f},{y(v):.1f}")
            start = p.start.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
            dots.append((css, round(x(i), 1), round(y(v), 1),
                         f"{name} {seconds(v)} ({p.count:,} records from {start})"))
        series.append((name, css, [" ".join(r) for r in runs if r]))
    y_ticks = [Tick(round(y(top * f), 1), seconds(top * f)) for f in (0, 0.5, 1)]
    x_ticks = []
    if n:
        picks = sorted({0, n // 2, n - 1})
        x_ticks = [Tick(round(x(i), 1),
                        points[i].start.astimezone(UTC).strftime("%b %d %H:%M"),
                        "start" if i == 0 and n > 1 else "end" if i == n - 1 and n > 1
                        else "middle")
                   for i in picks]
    return LineChart(WIDTH, HEIGHT, series, dots, y_ticks, x_ticks, not values)


@dataclass(frozen=True, slots=True)
class Bar:
    label: str
    full: str
    y: float
    width: float
    count: int


@dataclass(frozen=True, slots=True)
class BarChart:
    width: int
    height: int
    label_x: int
    bar_x: int
    bars: list[Bar]


def rule_bars(rules: Sequence[Share]) -> BarChart:
    """One horizontal bar per rule, longest first (as given)."""
    top = max((r.count for r in rules), default=0)
    room = WIDTH - BAR_LABEL - BAR_VALUE
    bars = []
    for i, r in enumerate(rules):
        full = r.name or "(no rule)"
        label = full if len(full) <= MAX_LABEL else full[:MAX_LABEL - 1] + "…"
        bars.append(Bar(label, full, 8 + i * BAR_ROW,
                        round(room * r.count / top, 1) if top else 0.0, r.count))
    return BarChart(WIDTH, 16 + len(rules) * BAR_ROW, BAR_LABEL - 8, BAR_LABEL, bars)
