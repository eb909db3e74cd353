"""Charts drawn on the server as inline SVG: no JavaScript, no library to vendor, and a page
with a chart is as cacheable and testable as any other.

`time_chart` draws lines over a time window (CPU and memory from observability.selectors);
`strip_chart` draws one dot per value on a row per group (workflow durations by kind). An
empty chart says so in words instead of drawing an empty frame.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise
from statistics import median

from django.utils.html import escape, format_html
from django.utils.safestring import SafeString, mark_safe

# Distinguishable on white and for the common colour-vision deficiencies (Okabe-Ito).
PALETTE = ["#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#000000"]
WIDTH, HEIGHT = 640, 200
LEFT, RIGHT, TOP, BOTTOM = 64, 12, 12, 26
MAX_TICKS = 5


@dataclass(frozen=True)
class Series:
    label: str
    points: Sequence[tuple[datetime, float]]


def _svg_open(title: str, height: int) -> str:
    """The opening tag of a chart, labelled for screen readers."""
    return format_html(
        '<svg class="chart-svg" viewBox="0 0 {} {}" role="img" aria-label="{}"><title>{}</title>',
        WIDTH,
        height,
        title,
        title,
    )


def _n(value: float) -> str:
    """A coordinate with one decimal: format_html escapes its arguments to strings first."""
    return f"{value:.1f}"


def _axis(largest: float) -> tuple[float, int]:
    """(top, ticks): the axis maximum and the number of steps, with a step of 1, 2 or 5 times a
    power of ten and at most five steps, so every tick label is a round number."""
    largest = max(largest, 1e-9)
    power = 10 ** math.floor(math.log10(largest / MAX_TICKS))
    for step in (power, 2 * power, 5 * power, 10 * power, 20 * power):
        ticks = max(math.ceil(largest / step - 1e-9), 1)
        if ticks <= MAX_TICKS:
            return step * ticks, ticks
    return 50 * power * math.ceil(largest / (50 * power)), MAX_TICKS


def _empty(title: str, message: str) -> SafeString:
    return format_html(
        '<figure class="chart" data-empty="true"><figcaption>{}</figcaption><p class="chart-empty">{}</p></figure>',
        title,
        message,
    )


def _legend(labels: list[str]) -> str:
    items = "".join(
        format_html('<li><span class="swatch" style="background:{}"></span>{}</li>', PALETTE[i % len(PALETTE)], label)
        for i, label in enumerate(labels)
    )
    return f'<ul class="legend">{items}</ul>'


def _runs(points: Sequence[tuple[datetime, float]]) -> list[list[tuple[datetime, float]]]:
    """Split a series where samples are missing (a gap over three typical steps): a gap drawn
    as a straight line would claim values nobody measured."""
    if len(points) < 3:
        return [list(points)]
    steps = [(b[0] - a[0]).total_seconds() for a, b in pairwise(points)]
    gap = 3 * median(steps)
    runs, current = [], [points[0]]
    for previous, point in pairwise(points):
        if (point[0] - previous[0]).total_seconds() > gap:
            runs.append(current)
            current = []
        current.append(point)
    runs.append(current)
    return runs


def time_chart(
    *,
    title: str,
    series: Sequence[Series],
    start: datetime,
    end: datetime,
    value_text: Callable[[float], str],
    ceiling: float | None = None,
    empty: str = "no samples yet",
) -> SafeString:
    """Lines of `series` between `start` and `end`; the y axis from 0 to the largest value (or
    `ceiling`, e.g. a node's capacity), labelled with `value_text`."""
    drawn = [s for s in series if s.points]
    if not drawn:
        return _empty(title, empty)
    span = max((end - start).total_seconds(), 1.0)
    top, ticks = _axis(max([ceiling or 0] + [value for s in drawn for _, value in s.points]))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(at: datetime) -> float:
        return LEFT + plot_w * min(max((at - start).total_seconds() / span, 0.0), 1.0)

    def y(value: float) -> float:
        return TOP + plot_h * (1 - min(value / top, 1.0))

    parts = [_svg_open(title, HEIGHT)]
    for i in range(ticks + 1):
        value = top * i / ticks
        parts.append(
            format_html(
                '<line class="gridline" x1="{}" x2="{}" y1="{}" y2="{}"/>'
                '<text class="tick" x="{}" y="{}" text-anchor="end">{}</text>',
                LEFT,
                WIDTH - RIGHT,
                _n(y(value)),
                _n(y(value)),
                LEFT - 6,
                _n(y(value) + 4),
                value_text(value),
            )
        )
    minutes = max(int(span // 60), 1)
    every = next((m for m in (5, 10, 15, 30, 60, 120, 360) if minutes / m <= 6), 720)
    tick = start.replace(second=0, microsecond=0) + timedelta(minutes=every - start.minute % every)
    while tick < end:
        parts.append(
            format_html(
                '<text class="tick" x="{}" y="{}" text-anchor="middle">{}</text>',
                _n(x(tick)),
                HEIGHT - 8,
                f"{tick:%H:%M}",
            )
        )
        tick += timedelta(minutes=every)
    if ceiling:
        parts.append(
            format_html(
                '<line class="ceiling" x1="{}" x2="{}" y1="{}" y2="{}"><title>{}</title></line>',
                LEFT,
                WIDTH - RIGHT,
                _n(y(ceiling)),
                _n(y(ceiling)),
                f"capacity {value_text(ceiling)}",
            )
        )
    for index, item in enumerate(series):
        colour = PALETTE[index % len(PALETTE)]
        for run in _runs(item.points):
            if len(run) == 1:
                at, value = run[0]
                parts.append(
                    format_html(
                        '<circle class="series" cx="{}" cy="{}" r="2.5" fill="{}"/>', _n(x(at)), _n(y(value)), colour
                    )
                )
                continue
            coords = " ".join(f"{x(at):.1f},{y(value):.1f}" for at, value in run)
            parts.append(
                format_html(
                    '<polyline class="series" fill="none" stroke="{}" stroke-width="2" points="{}"><title>{}</title>'
                    "</polyline>",
                    colour,
                    coords,
                    f"{item.label}: last {value_text(run[-1][1])}",
                )
            )
    parts.append("</svg>")
    return mark_safe(  # noqa: S308 - every piece above went through format_html
        f'<figure class="chart"><figcaption>{escape(title)}</figcaption>{"".join(parts)}'
        f"{_legend([s.label for s in series])}</figure>"
    )


def strip_chart(
    *, title: str, rows: Sequence[tuple[str, Sequence[float]]], value_text: Callable[[float], str], empty: str
) -> SafeString:
    """One row per group, one dot per value along a shared axis from 0, and the median as a bar."""
    rows = [(label, values) for label, values in rows if values]
    if not rows:
        return _empty(title, empty)
    row_h, label_w = 28, 150
    height = TOP + row_h * len(rows) + BOTTOM
    top, ticks = _axis(max(v for _, values in rows for v in values))
    plot_w = WIDTH - label_w - RIGHT

    def x(value: float) -> float:
        return label_w + plot_w * min(value / top, 1.0)

    parts = [_svg_open(title, height)]
    for i in range(ticks + 1):
        value = top * i / ticks
        parts.append(
            format_html(
                '<line class="gridline" x1="{}" x2="{}" y1="{}" y2="{}"/>'
                '<text class="tick" x="{}" y="{}" text-anchor="middle">{}</text>',
                _n(x(value)),
                _n(x(value)),
                TOP,
                height - BOTTOM,
                _n(x(value)),
                height - 8,
                value_text(value),
            )
        )
    for index, (label, values) in enumerate(rows):
        colour = PALETTE[index % len(PALETTE)]
        middle = TOP + row_h * index + row_h / 2
        mid = median(values)
        parts.append(
            format_html(
                '<text class="row-label" x="{}" y="{}" text-anchor="end">{}</text>',
                label_w - 8,
                _n(middle + 4),
                f"{label} ({len(values)})",
            )
        )
        parts.extend(
            format_html(
                '<circle class="series" cx="{}" cy="{}" r="3" fill="{}" fill-opacity=".6"><title>{}</title></circle>',
                _n(x(value)),
                _n(middle),
                colour,
                f"{label}: {value_text(value)}",
            )
            for value in values
        )
        parts.append(
            format_html(
                '<line class="median" x1="{}" x2="{}" y1="{}" y2="{}" stroke="{}" stroke-width="3">'
                "<title>{}</title></line>",
                _n(x(mid)),
                _n(x(mid)),
                _n(middle - row_h / 3),
                _n(middle + row_h / 3),
                colour,
                f"{label}: median {value_text(mid)}",
            )
        )
    parts.append("</svg>")
    return mark_safe(  # noqa: S308 - every piece above went through format_html
        f'<figure class="chart"><figcaption>{escape(title)}</figcaption>{"".join(parts)}</figure>'
    )
