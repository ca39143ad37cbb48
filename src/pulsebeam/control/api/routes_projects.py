"""Projects and their members. Any member may use or delete a project; owners manage members."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, status

from pulsebeam.control.api.deps import ERRORS, MemberProject, StoreDep, publish
from pulsebeam.control.api.schemas import (
    MemberAdd,
    MemberOut,
    MemberUpdate,
    ProjectCreate,
    ProjectOut,
)
from pulsebeam.control.api.security import CurrentCaller
from pulsebeam.control.events import KeyDeleted
from pulsebeam.control.views import Role

__all__ = ["router"]

router = APIRouter(responses=ERRORS)
AccountId = Annotated[str, Path(max_length=64, description="account id (acc_…)")]


@router.get("/projects", tags=["projects"], summary="Projects you belong to")
async def list_projects(who: CurrentCaller, store: StoreDep) -> list[ProjectOut]:
    return [ProjectOut.of(p) for p in await store.list_projects(who.account.id)]


@router.post(
    "/projects",
    tags=["projects"],
    status_code=status.HTTP_201_CREATED,
    summary="Create a project (you become its owner)",
)
async def create_project(body: ProjectCreate, who: CurrentCaller, store: StoreDep) -> ProjectOut:
    return ProjectOut.of(await store.create_project(body.name, who.account.id, who.actor))


@router.get("/projects/{project_id}", tags=["projects"], summary="One project")
async def get_project(project: MemberProject) -> ProjectOut:
    return ProjectOut.of(project)


@router.patch("/projects/{project_id}", tags=["projects"], summary="Rename a project")
async def rename_project(
    body: ProjectCreate, project: MemberProject, who: CurrentCaller, store: StoreDep
) -> ProjectOut:
    renamed = await store.rename_project(project.id, body.name, who.actor)
    return ProjectOut(
        id=renamed.id, name=renamed.name, created_at=renamed.created_at, role=project.role
    )


@router.delete(
    "/projects/{project_id}",
    tags=["projects"],
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a project, its keys (revoked at once), bans and logs",
)
async def delete_project(
    project: MemberProject, who: CurrentCaller, store: StoreDep, request: Request
) -> None:
    deleted = await store.delete_project(project.id, who.actor)
    await publish(request, *(KeyDeleted(k.kid, k.project_id) for k in deleted))


@router.get("/projects/{project_id}/members", tags=["members"], summary="Members of a project")
async def list_members(project: MemberProject, store: StoreDep) -> list[MemberOut]:
    return [MemberOut.of(m) for m in await store.list_members(project.id)]


@router.post(
    "/projects/{project_id}/members",
    tags=["members"],
    status_code=status.HTTP_201_CREATED,
    summary="Share a project with an existing account (owners only)",
)
async def add_member(
    body: MemberAdd, project: MemberProject, who: CurrentCaller, store: StoreDep
) -> MemberOut:
    await store.require_access(project.id, who.account.id, owner=True)
    return MemberOut.of(await store.add_member(project.id, body.email, body.role, who.actor))


@router.patch(
    "/projects/{project_id}/members/{account_id}",
    tags=["members"],
    summary="Change a member's role (owners only)",
)
async def update_member(
    account_id: AccountId,
    body: MemberUpdate,
    project: MemberProject,
    who: CurrentCaller,
    store: StoreDep,
) -> MemberOut:
    await store.require_access(project.id, who.account.id, owner=True)
    return MemberOut.of(await store.set_member_role(project.id, account_id, body.role, who.actor))


@router.delete(
    "/projects/{project_id}/members/{account_id}",
    tags=["members"],
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove a member (owners), or leave a project yourself",
)
async def remove_member(
    account_id: AccountId, project: MemberProject, who: CurrentCaller, store: StoreDep
) -> None:
    if account_id != who.account.id and project.role is not Role.OWNER:
        await store.require_access(project.id, who.account.id, owner=True)
    await store.remove_member(project.id, account_id, who.actor)
