"""Monitoring: a project's usage over a chosen range (charts), connection log and audit log."""

from __future__ import annotations

from datetime import date, timedelta

from starlette.requests import Request
from starlette.responses import Response

from pulsebeam.console.charts import Chart, bar_chart
from pulsebeam.console.common import console_of, project_page, render
from pulsebeam.control.base import utcnow
from pulsebeam.control.projects import AUDIT_KINDS
from pulsebeam.control.views import UsageDay
from pulsebeam.errors import InvalidArgumentError, PulseBeamError

__all__ = ["PAGE_SIZE", "RANGES", "audit", "connections", "usage", "usage_charts"]

PAGE_SIZE = 50
RANGES = (7, 30, 90)
"""The preset ranges (days up to today, UTC); any other range is given by start and end."""


def _date(value: str, what: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidArgumentError(f"{what} must be a date like 2030-01-31") from None


def _range(params: dict[str, str], today: date) -> tuple[date, date, int | None]:
    """(start, end, preset) from the query: ``days`` (a preset) or ``start`` and ``end``."""
    if params.get("start") or params.get("end"):
        start = _date(params.get("start", ""), "the start date")
        end = _date(params.get("end", ""), "the end date")
        return start, end, None
    days_text = params.get("days", "30")
    if not days_text.isdigit() or int(days_text) not in RANGES:
        raise InvalidArgumentError(f"days must be one of {', '.join(map(str, RANGES))}")
    days = int(days_text)
    return today - timedelta(days=days - 1), today, days


def _page_cursor(params: dict[str, str]) -> int | None:
    before = params.get("before", "")
    if not before:
        return None
    if not before.isdigit() or not 1 <= int(before) <= 2**62:
        raise InvalidArgumentError("before must be a positive whole number (from the Older link)")
    return int(before)


def usage_charts(start: date, end: date, days: list[UsageDay]) -> list[Chart]:
    """Four charts with one bar per day of the range (days without usage count zero)."""
    by_day = {d.day: d for d in days}
    span = [start + timedelta(days=i) for i in range((end - start).days + 1)]

    def series(field: str) -> list[tuple[str, int]]:
        return [
            (day.isoformat(), getattr(by_day[day], field) if day in by_day else 0) for day in span
        ]

    return [
        bar_chart("peers", "Daily active peers", "count", series("active_peers")),
        bar_chart("concurrent", "Peak concurrent peers", "count", series("peak_streams")),
        bar_chart("messages", "Signaling messages", "count", series("messages")),
        bar_chart("turn", "TURN relayed bytes", "bytes", series("turn_bytes")),
    ]


async def usage(request: Request) -> Response:
    _, project = await project_page(request)
    params = dict(request.query_params)
    today = utcnow().date()
    context: dict[str, object] = {
        "title": f"Usage of {project.name}",
        "project": project,
        "tab": "usage",
        "ranges": RANGES,
        "charts": [],
        "preset": None,
        "start": params.get("start", ""),
        "end": params.get("end", ""),
    }
    try:
        start, end, preset = _range(params, today)
        days = await console_of(request).store.usage(project.id, start, end)
    except PulseBeamError as exc:
        context["error"] = str(exc)
        return render(request, "usage.html", context, status=exc.http_status)
    context.update(
        start=start.isoformat(),
        end=end.isoformat(),
        preset=preset,
        charts=usage_charts(start, end, days),
    )
    return render(request, "usage.html", context)


async def connections(request: Request) -> Response:
    _, project = await project_page(request)
    before = _page_cursor(dict(request.query_params))
    rows = await console_of(request).store.connection_log(
        project.id, before_id=before, limit=PAGE_SIZE
    )
    context = {
        "title": f"Connections of {project.name}",
        "project": project,
        "tab": "connections",
        "rows": rows,
        "older": rows[-1].id if len(rows) == PAGE_SIZE else None,
        "paged": before is not None,
    }
    return render(request, "connections.html", context)


async def audit(request: Request) -> Response:
    _, project = await project_page(request)
    params = dict(request.query_params)
    kind, who = params.get("kind", ""), params.get("actor", "").strip()
    context: dict[str, object] = {
        "title": f"Audit log of {project.name}",
        "project": project,
        "tab": "audit",
        "kinds": AUDIT_KINDS,
        "kind": kind,
        "actor": who,
        "entries": [],
        "older": None,
        "paged": False,
    }
    try:
        before = _page_cursor(params)
        entries = await console_of(request).store.list_audit(
            project.id,
            kind=kind,
            actor=who,
            before_id=before,
            limit=PAGE_SIZE,
        )
    except PulseBeamError as exc:
        context["error"] = str(exc)
        return render(request, "audit.html", context, status=exc.http_status)
    context.update(
        entries=entries,
        older=entries[-1].id if len(entries) == PAGE_SIZE else None,
        paged=before is not None,
    )
    return render(request, "audit.html", context)
