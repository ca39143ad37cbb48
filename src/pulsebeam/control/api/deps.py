"""Shared route plumbing: the store, the caller's project, event publishing, error responses."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import Depends, Path, Request

from pulsebeam.control.api.schemas import ErrorBody
from pulsebeam.control.api.security import CurrentCaller
from pulsebeam.control.events import ControlEvent, EventSink
from pulsebeam.control.store import Store
from pulsebeam.control.views import ProjectInfo

__all__ = ["ERRORS", "MemberProject", "ProjectId", "StoreDep", "get_store", "publish"]

logger = logging.getLogger(__name__)

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in (
        (400, "bad input"),
        (401, "not signed in"),
        (403, "CSRF check failed or not allowed"),
        (404, "not found (or not yours)"),
        (409, "conflict"),
        (413, "request body too large"),
        (422, "malformed request"),
        (429, "too many attempts"),
    )
}

ProjectId = Annotated[str, Path(max_length=64, description="project id (prj_…)")]


def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


StoreDep = Annotated[Store, Depends(get_store)]


async def member_project(project_id: ProjectId, who: CurrentCaller, store: StoreDep) -> ProjectInfo:
    """The project in the path if the caller is a member; 404 otherwise (never 403: no leak)."""
    return await store.require_access(project_id, who.account.id)


MemberProject = Annotated[ProjectInfo, Depends(member_project)]


async def publish(request: Request, *events: ControlEvent) -> None:
    """Publish revocation events after the change committed. A failure is logged, not raised:
    the change stands, and nodes still notice it on their next cache miss."""
    sink: EventSink = request.app.state.events
    for event in events:
        try:
            await sink(event)
        except Exception:
            logger.exception("could not publish %r", event)
