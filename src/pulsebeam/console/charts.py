"""Bar charts of daily usage, laid out on the server and drawn as inline SVG by a template.

Drawn by hand rather than with a JavaScript chart library: the charts are at most 366 bars with
a scale, so a few lines of geometry give pages that work without JavaScript, scale on narrow
screens (viewBox) and carry their numbers as text for screen readers and tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Bar", "Chart", "bar_chart", "nice_ceiling"]

WIDTH = 360
HEIGHT = 140
_GAP = 0.2  # share of a slot left empty between bars


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str
    value: int


@dataclass(frozen=True, slots=True)
class Chart:
    key: str
    title: str
    unit: str  # "count" or "bytes": picks the filter that prints values
    bars: tuple[Bar, ...]
    top: int  # value at the top of the scale
    total: int
    peak: int
    width: int = WIDTH
    height: int = HEIGHT


def nice_ceiling(value: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten that is >= value (at least 1)."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def bar_chart(key: str, title: str, unit: str, points: Sequence[tuple[str, int]]) -> Chart:
    """One bar per point (label, value >= 0), scaled to the largest value."""
    peak = max((value for _, value in points), default=0)
    top = nice_ceiling(peak)
    slot = WIDTH / max(1, len(points))
    bars = []
    for i, (label, value) in enumerate(points):
        height = HEIGHT * value / top
        bars.append(
            Bar(
                x=round(i * slot + slot * _GAP / 2, 2),
                y=round(HEIGHT - height, 2),
                width=round(slot * (1 - _GAP), 2),
                height=round(height, 2),
                label=label,
                value=value,
            )
        )
    total = sum(value for _, value in points)
    return Chart(key, title, unit, tuple(bars), top, total, peak)
