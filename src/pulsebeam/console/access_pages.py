"""A project's keys (the secret shown once at creation) and bans.

Deleting a key or changing bans publishes the revocation event after the change commits, as the
REST API does, so signaling and TURN act on it at once.
"""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response

from pulsebeam.console.common import actor as actor_of
from pulsebeam.console.common import console_of, project_form, project_page, redirect, render
from pulsebeam.console.quickstart import env_file
from pulsebeam.control.api.deps import publish
from pulsebeam.control.base import utcnow
from pulsebeam.control.events import BanAdded, BanRemoved, KeyDeleted
from pulsebeam.control.views import CreatedKey, ProjectInfo
from pulsebeam.errors import InvalidArgumentError, NotFoundError, PulseBeamError

__all__ = [
    "BAN_DURATIONS",
    "add_ban",
    "bans",
    "create_key",
    "delete_key",
    "delete_key_confirm",
    "keys",
    "remove_ban",
]

BAN_DURATIONS: dict[str, tuple[str, timedelta | None]] = {
    "forever": ("until lifted", None),
    "1h": ("1 hour", timedelta(hours=1)),
    "1d": ("1 day", timedelta(days=1)),
    "7d": ("7 days", timedelta(days=7)),
    "30d": ("30 days", timedelta(days=30)),
}


async def _keys(
    request: Request,
    project: ProjectInfo,
    *,
    created: CreatedKey | None = None,
    error: str | None = None,
    label: str = "",
    status: int = 200,
) -> Response:
    context = {
        "title": f"Keys of {project.name}",
        "project": project,
        "tab": "keys",
        "keys": await console_of(request).store.list_project_keys(project.id),
        "now": utcnow(),
        "created": created,
        "error": error,
        "label": label,
    }
    if created is not None:
        env = env_file(created.key.kid, created.api_secret)
        context["env_text"] = env
        context["env_href"] = "data:text/plain;charset=utf-8," + quote(env)
    return render(request, "keys.html", context, status=status)


async def keys(request: Request) -> Response:
    _, project = await project_page(request)
    return await _keys(request, project)


async def create_key(request: Request) -> Response:
    """Answers with the page itself (no redirect), the only time the secret exists anywhere."""
    session, project, form = await project_form(request)
    label = form.get("label", "")
    try:
        created = await console_of(request).store.create_key(project.id, label, actor_of(session))
    except PulseBeamError as exc:
        return await _keys(request, project, error=str(exc), label=label, status=exc.http_status)
    return await _keys(request, project, created=created, status=201)


async def _key_of(request: Request, project: ProjectInfo) -> str:
    kid = str(request.path_params["kid"])[:64]
    if not any(
        k.key.kid == kid for k in await console_of(request).store.list_project_keys(project.id)
    ):
        raise NotFoundError(f"key {kid} not found in this project")
    return kid


async def delete_key_confirm(request: Request) -> Response:
    _, project = await project_page(request)
    kid = await _key_of(request, project)
    context = {"title": f"Delete key {kid}", "project": project, "tab": "keys", "kid": kid}
    return render(request, "key_delete.html", context)


async def delete_key(request: Request) -> Response:
    session, project, _ = await project_form(request)
    kid = str(request.path_params["kid"])[:64]
    key = await console_of(request).store.delete_key(kid, actor_of(session), project_id=project.id)
    await publish(request, KeyDeleted(key.kid, key.project_id))
    return redirect(request, "keys", project_id=project.id, query={"notice": "key_deleted"})


# -- bans ------------------------------------------------------------------------------------


async def _bans(
    request: Request,
    project: ProjectInfo,
    *,
    error: str | None = None,
    form: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    context = {
        "title": f"Bans of {project.name}",
        "project": project,
        "tab": "bans",
        "bans": await console_of(request).store.list_bans(project.id),
        "durations": {key: text for key, (text, _) in BAN_DURATIONS.items()},
        "error": error,
        "form": form or {},
    }
    return render(request, "bans.html", context, status=status)


async def bans(request: Request) -> Response:
    _, project = await project_page(request)
    return await _bans(request, project)


async def add_ban(request: Request) -> Response:
    session, project, form = await project_form(request)
    try:
        duration = BAN_DURATIONS.get(form.get("duration", "forever"))
        if duration is None:
            raise InvalidArgumentError("pick how long the ban lasts from the list")
        ends = None if duration[1] is None else utcnow() + duration[1]
        ban = await console_of(request).store.add_ban(
            project.id,
            form.get("group_pattern", "").strip(),
            form.get("peer_pattern", "").strip(),
            actor_of(session),
            reason=form.get("reason", ""),
            expires_at=ends,
        )
    except PulseBeamError as exc:
        return await _bans(request, project, error=str(exc), form=form, status=exc.http_status)
    await publish(request, BanAdded.of(ban))
    return redirect(request, "bans", project_id=project.id, query={"notice": "ban_added"})


async def remove_ban(request: Request) -> Response:
    session, project, _ = await project_form(request)
    ban_id = str(request.path_params["ban_id"])[:64]
    ban = await console_of(request).store.remove_ban(
        ban_id, actor_of(session), project_id=project.id
    )
    await publish(request, BanRemoved(ban.id, ban.project_id))
    return redirect(request, "bans", project_id=project.id, query={"notice": "ban_removed"})
