"""Jinja filters that turn stored values into words: times, ages, byte counts."""

from __future__ import annotations

from datetime import datetime, timedelta

__all__ = ["FILTERS", "age", "bytes_text", "count_text", "when"]


def when(value: datetime | None) -> str:
    return "never" if value is None else value.strftime("%Y-%m-%d %H:%M UTC")


def age(delta: timedelta) -> str:
    """A rough age: "just now", "5 minutes", "3 hours", "12 days"."""
    seconds = max(0, int(delta.total_seconds()))
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = seconds // size
            return f"{n} {unit}{'' if n == 1 else 's'}"
    return "just now"


def bytes_text(value: int) -> str:
    size = float(value)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def count_text(value: int) -> str:
    return f"{value:,}"


FILTERS = {"when": when, "age": age, "bytes": bytes_text, "count": count_text}
