"""Chart layout, the value filters and the console's public names (pure functions, no I/O)."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

import pulsebeam.console
from pulsebeam.console.charts import HEIGHT, WIDTH, bar_chart, nice_ceiling
from pulsebeam.console.filters import age, bytes_text
from pulsebeam.console.monitor_pages import usage_charts
from pulsebeam.control.views import UsageDay


def test_console_names_are_pinned() -> None:
    assert sorted(pulsebeam.console.__all__) == ["announce_first_run", "create_console"]


@pytest.mark.parametrize(
    ("value", "ceiling"), [(0, 1), (1, 1), (3, 5), (7, 10), (10, 10), (11, 20), (1234, 2000)]
)
def test_nice_ceiling(value: int, ceiling: int) -> None:
    assert nice_ceiling(value) == ceiling


def test_bars_scale_to_the_top_of_the_chart() -> None:
    chart = bar_chart("m", "Messages", "count", [("a", 0), ("b", 5), ("c", 10)])
    assert chart.top == 10
    assert chart.peak == 10
    assert chart.total == 15
    heights = [bar.height for bar in chart.bars]
    assert heights == [0, HEIGHT / 2, HEIGHT]
    assert all(bar.y + bar.height == HEIGHT for bar in chart.bars)
    assert chart.bars[-1].x + chart.bars[-1].width <= WIDTH
    assert [bar.x for bar in chart.bars] == sorted(bar.x for bar in chart.bars)


def test_an_empty_chart_has_no_bars() -> None:
    chart = bar_chart("m", "Messages", "count", [])
    assert chart.bars == ()
    assert chart.top == 1


def test_usage_charts_fill_days_without_usage_with_zero() -> None:
    start = date(2030, 1, 1)
    day = UsageDay("prj_x", start + timedelta(days=2), 7, 3, 1000, 9, 1, 4)
    charts = usage_charts(start, start + timedelta(days=3), [day])
    assert [c.key for c in charts] == ["peers", "concurrent", "messages", "turn"]
    assert [b.value for b in charts[0].bars] == [0, 0, 4, 0]
    assert [b.value for b in charts[1].bars] == [0, 0, 3, 0]
    assert [b.value for b in charts[2].bars] == [0, 0, 7, 0]
    assert [b.value for b in charts[3].bars] == [0, 0, 1000, 0]
    assert charts[0].bars[2].label == "2030-01-03"


def test_filters_put_values_in_words() -> None:
    assert bytes_text(999) == "999 B"
    assert bytes_text(1_500_000) == "1.5 MB"
    assert bytes_text(3 * 10**15) == "3000.0 TB"
    assert age(timedelta(seconds=30)) == "just now"
    assert age(timedelta(minutes=1)) == "1 minute"
    assert age(timedelta(days=91, hours=3)) == "91 days"
