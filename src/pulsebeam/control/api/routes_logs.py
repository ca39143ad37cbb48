"""A project's audit log, usage per day and connection log (paged newest first)."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Annotated

from fastapi import APIRouter, Query

from pulsebeam.control.api.deps import ERRORS, MemberProject, StoreDep
from pulsebeam.control.api.schemas import (
    AuditOut,
    AuditPage,
    ConnectionOut,
    ConnectionPage,
    UsageOut,
    UsagePage,
)
from pulsebeam.control.base import utcnow
from pulsebeam.control.projects import AUDIT_KINDS, MAX_PAGE

__all__ = ["router"]

router = APIRouter(responses=ERRORS)
Before = Annotated[
    int | None, Query(ge=1, le=2**62, description="next_before of the previous page")
]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE)]
DEFAULT_DAYS = timedelta(days=29)  # with today: 30 days


@router.get("/projects/{project_id}/audit", tags=["logs"], summary="Audit log, newest first")
async def audit(
    project: MemberProject,
    store: StoreDep,
    before: Before = None,
    limit: Limit = 50,
    kind: Annotated[
        str, Query(max_length=20, description="one family: " + ", ".join(AUDIT_KINDS))
    ] = "",
    actor: Annotated[str, Query(max_length=254, description="part of who acted")] = "",
) -> AuditPage:
    items = await store.list_audit(
        project.id, kind=kind, actor=actor, before_id=before, limit=limit
    )
    return AuditPage(
        items=[AuditOut.of(e) for e in items],
        next_before=items[-1].id if len(items) == limit else None,
    )


@router.get(
    "/projects/{project_id}/usage",
    tags=["logs"],
    summary="Usage per UTC day (default: the last 30 days)",
)
async def usage(
    project: MemberProject,
    store: StoreDep,
    start: Annotated[date | None, Query(description="first day (inclusive)")] = None,
    end: Annotated[date | None, Query(description="last day (inclusive)")] = None,
) -> UsagePage:
    end = end or utcnow().date()
    if start is None:
        start = end - DEFAULT_DAYS if end - date.min > DEFAULT_DAYS else date.min
    days = await store.usage(project.id, start, end)
    return UsagePage(start=start, end=end, items=[UsageOut.of(u) for u in days])


@router.get(
    "/projects/{project_id}/connections",
    tags=["logs"],
    summary="Connection log (who signaled whom), newest first",
)
async def connections(
    project: MemberProject, store: StoreDep, before: Before = None, limit: Limit = 50
) -> ConnectionPage:
    rows = await store.connection_log(project.id, before_id=before, limit=limit)
    return ConnectionPage(
        items=[ConnectionOut.of(r) for r in rows],
        next_before=rows[-1].id if len(rows) == limit else None,
    )
