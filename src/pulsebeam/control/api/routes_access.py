"""A project's API keys and bans. Deleting a key or changing bans publishes a revocation event
after the change commits, so signaling and TURN act on it at once."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, status

from pulsebeam.control.api.deps import ERRORS, MemberProject, StoreDep, publish
from pulsebeam.control.api.schemas import BanCreate, BanOut, KeyCreate, KeyCreated, KeyOut
from pulsebeam.control.api.security import CurrentCaller
from pulsebeam.control.base import utcnow
from pulsebeam.control.events import BanAdded, BanRemoved, KeyDeleted

__all__ = ["router"]

router = APIRouter(responses=ERRORS)
Kid = Annotated[str, Path(max_length=64, description="key id (kid_…)")]
BanId = Annotated[str, Path(max_length=64, description="ban id (ban_…)")]


@router.get(
    "/projects/{project_id}/keys",
    tags=["keys"],
    summary="A project's keys (public halves; old keys flagged for rotation)",
)
async def list_keys(project: MemberProject, store: StoreDep) -> list[KeyOut]:
    now = utcnow()
    return [KeyOut.of(k, now) for k in await store.list_project_keys(project.id)]


@router.post(
    "/projects/{project_id}/keys",
    tags=["keys"],
    status_code=status.HTTP_201_CREATED,
    summary="Create a key; the response holds the secret, shown only this once",
)
async def create_key(
    body: KeyCreate, project: MemberProject, who: CurrentCaller, store: StoreDep
) -> KeyCreated:
    created = await store.create_key(project.id, body.label, who.actor)
    return KeyCreated(
        api_key=created.key.kid,
        api_secret=created.api_secret,
        public_key=created.key.public_key,
        label=created.key.label,
        created_at=created.key.created_at,
    )


@router.delete(
    "/projects/{project_id}/keys/{kid}",
    tags=["keys"],
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a key: every token minted with it stops working at once",
)
async def delete_key(
    kid: Kid, project: MemberProject, who: CurrentCaller, store: StoreDep, request: Request
) -> None:
    key = await store.delete_key(kid, who.actor, project_id=project.id)
    await publish(request, KeyDeleted(key.kid, key.project_id))


@router.get("/projects/{project_id}/bans", tags=["bans"], summary="A project's active bans")
async def list_bans(project: MemberProject, store: StoreDep) -> list[BanOut]:
    return [BanOut.of(b) for b in await store.list_bans(project.id)]


@router.post(
    "/projects/{project_id}/bans",
    tags=["bans"],
    status_code=status.HTTP_201_CREATED,
    summary="Ban peers matching both patterns; their streams close at once",
)
async def add_ban(
    body: BanCreate, project: MemberProject, who: CurrentCaller, store: StoreDep, request: Request
) -> BanOut:
    ban = await store.add_ban(
        project.id,
        body.group_pattern,
        body.peer_pattern,
        who.actor,
        reason=body.reason,
        expires_at=body.expires_at,
    )
    await publish(request, BanAdded.of(ban))
    return BanOut.of(ban)


@router.delete(
    "/projects/{project_id}/bans/{ban_id}",
    tags=["bans"],
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Lift a ban",
)
async def remove_ban(
    ban_id: BanId, project: MemberProject, who: CurrentCaller, store: StoreDep, request: Request
) -> None:
    ban = await store.remove_ban(ban_id, who.actor, project_id=project.id)
    await publish(request, BanRemoved(ban.id, ban.project_id))
