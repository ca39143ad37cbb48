"""The audit log of a project, filtered by kind of action and by actor, newest first.

The store's ``list_audit`` pages but does not filter, so this one query reads the store's
``audit_events`` table through the store's own connection.
"""

from __future__ import annotations

import json

from sqlalchemy import func, select

from pulsebeam.control.projects import check_page_limit
from pulsebeam.control.schema import audit_events
from pulsebeam.control.store import Store
from pulsebeam.control.views import AuditEntry
from pulsebeam.errors import InvalidArgumentError

__all__ = ["ACTION_KINDS", "filtered_audit"]

ACTION_KINDS = ("project", "member", "key", "ban")
"""The families of audit actions (``key.create``, ``key.delete``, …) a page can filter by."""


async def filtered_audit(
    store: Store,
    project_id: str,
    *,
    kind: str = "",
    actor: str = "",
    before_id: int | None = None,
    limit: int = 50,
) -> list[AuditEntry]:
    """A page of a project's audit events; ``kind`` is one of :data:`ACTION_KINDS` (or empty),
    ``actor`` a case-insensitive part of who acted (or empty)."""
    check_page_limit(limit)
    if kind and kind not in ACTION_KINDS:
        raise InvalidArgumentError(f"unknown kind of action {kind[:20]!r}: use one of the list")
    if len(actor) > 254:
        raise InvalidArgumentError("the actor filter is too long: at most 254 characters")
    query = (
        select(audit_events)
        .where(audit_events.c.project_id == project_id)
        .order_by(audit_events.c.id.desc())
        .limit(limit)
    )
    if kind:
        query = query.where(audit_events.c.action.startswith(kind + ".", autoescape=True))
    if actor:
        query = query.where(
            func.lower(audit_events.c.actor).contains(actor.lower(), autoescape=True)
        )
    if before_id is not None:
        query = query.where(audit_events.c.id < before_id)
    async with store._read() as conn:
        return [
            AuditEntry(
                id=row.id,
                at=row.at,
                actor=row.actor,
                actor_id=row.actor_id,
                project_id=row.project_id,
                action=row.action,
                target=row.target,
                details=json.loads(row.details),
            )
            for row in await conn.execute(query)
        ]
