"""Projects (list, create, overview with the quick start, rename, delete) and their members."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from pulsebeam.console.common import (
    actor,
    check_csrf,
    console_of,
    project_form,
    project_page,
    read_form,
    redirect,
    render,
    signed_in,
)
from pulsebeam.console.quickstart import snippets
from pulsebeam.control.api.deps import publish
from pulsebeam.control.events import KeyDeleted
from pulsebeam.control.views import ProjectInfo, Role
from pulsebeam.errors import PulseBeamError

__all__ = [
    "add_member",
    "create_project",
    "delete_project",
    "delete_project_confirm",
    "members",
    "overview",
    "projects",
    "remove_member",
    "rename_project",
    "server_url",
    "set_member_role",
]


async def _projects_page(
    request: Request, *, error: str | None = None, name: str = "", status: int = 200
) -> Response:
    session = await signed_in(request)
    mine = await console_of(request).store.list_projects(session.account.id)
    context = {"title": "Projects", "projects": mine, "error": error, "name": name}
    return render(request, "projects.html", context, status=status)


async def projects(request: Request) -> Response:
    return await _projects_page(request)


async def create_project(request: Request) -> Response:
    session = await signed_in(request)
    form = await read_form(request)
    check_csrf(form, session.csrf_token)
    name = form.get("name", "")
    try:
        project = await console_of(request).store.create_project(
            name, session.account.id, actor(session)
        )
    except PulseBeamError as exc:
        return await _projects_page(request, error=str(exc), name=name, status=exc.http_status)
    return redirect(request, "project", project_id=project.id, query={"notice": "created"})


def server_url(request: Request) -> str:
    """The URL SDKs reach this server at: the configured public URL, else this request's."""
    configured = console_of(request).public_url
    if configured:
        return configured.rstrip("/")
    return f"{request.url.scheme}://{request.url.netloc}"


async def _overview(
    request: Request, project: ProjectInfo, *, error: str | None = None, status: int = 200
) -> Response:
    keys = await console_of(request).store.list_project_keys(project.id)
    newest = keys[-1].key.kid if keys else None
    context = {
        "title": project.name,
        "project": project,
        "tab": "overview",
        "key_count": len(keys),
        "snippets": snippets(server_url(request), newest),
        "api_key": newest,
        "error": error,
    }
    return render(request, "overview.html", context, status=status)


async def overview(request: Request) -> Response:
    _, project = await project_page(request)
    return await _overview(request, project)


async def rename_project(request: Request) -> Response:
    session, project, form = await project_form(request)
    try:
        await console_of(request).store.rename_project(
            project.id, form.get("name", ""), actor(session)
        )
    except PulseBeamError as exc:
        return await _overview(request, project, error=str(exc), status=exc.http_status)
    return redirect(request, "project", project_id=project.id, query={"notice": "renamed"})


async def delete_project_confirm(request: Request, *, error: str | None = None) -> Response:
    _, project = await project_page(request)
    keys = await console_of(request).store.list_project_keys(project.id)
    context = {
        "title": f"Delete {project.name}",
        "project": project,
        "tab": "overview",
        "keys": keys,
        "error": error,
    }
    return render(request, "project_delete.html", context, status=400 if error else 200)


async def delete_project(request: Request) -> Response:
    session, project, form = await project_form(request)
    if form.get("confirm_name", "").strip() != project.name:
        return await delete_project_confirm(
            request, error="to confirm, type the name of the project exactly"
        )
    deleted = await console_of(request).store.delete_project(project.id, actor(session))
    await publish(request, *(KeyDeleted(k.kid, k.project_id) for k in deleted))
    return redirect(request, "projects", query={"notice": "project_deleted"})


# -- members ---------------------------------------------------------------------------------


async def _members(
    request: Request,
    project: ProjectInfo,
    *,
    error: str | None = None,
    email: str = "",
    status: int = 200,
) -> Response:
    session = request.state.session
    context = {
        "title": f"Members of {project.name}",
        "project": project,
        "tab": "members",
        "members": await console_of(request).store.list_members(project.id),
        "is_owner": project.role is Role.OWNER,
        "me": session.account.id,
        "roles": [role.value for role in Role],
        "error": error,
        "email": email,
    }
    return render(request, "members.html", context, status=status)


async def members(request: Request) -> Response:
    _, project = await project_page(request)
    return await _members(request, project)


async def add_member(request: Request) -> Response:
    session, project, form = await project_form(request, owner=True)
    email = form.get("email", "")
    try:
        await console_of(request).store.add_member(
            project.id, email, form.get("role", Role.MEMBER.value), actor(session)
        )
    except PulseBeamError as exc:
        return await _members(request, project, error=str(exc), email=email, status=exc.http_status)
    return redirect(request, "members", project_id=project.id, query={"notice": "member_added"})


async def set_member_role(request: Request) -> Response:
    session, project, form = await project_form(request, owner=True)
    account_id = str(request.path_params["account_id"])[:64]
    try:
        await console_of(request).store.set_member_role(
            project.id, account_id, form.get("role", ""), actor(session)
        )
    except PulseBeamError as exc:
        return await _members(request, project, error=str(exc), status=exc.http_status)
    return redirect(request, "members", project_id=project.id, query={"notice": "role_changed"})


async def remove_member(request: Request) -> Response:
    session, project, _ = await project_form(request, owner=True)
    account_id = str(request.path_params["account_id"])[:64]
    try:
        await console_of(request).store.remove_member(project.id, account_id, actor(session))
    except PulseBeamError as exc:
        return await _members(request, project, error=str(exc), status=exc.http_status)
    if account_id == session.account.id:  # left the project: it is no longer visible
        return redirect(request, "projects", query={"notice": "left_project"})
    return redirect(request, "members", project_id=project.id, query={"notice": "member_removed"})
