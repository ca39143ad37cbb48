"""Projects, shared ownership (memberships) and the audit log.

Access rule: any member may use a project (keys, bans, logs, deleting it); only owners manage
members. A project always keeps at least one owner. Callers that act for an account check access
with :meth:`ProjectsMixin.require_access`, which answers "not found" to non-members so that a
project's existence never leaks.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from pulsebeam.control.base import (
    StoreBase,
    clean_text,
    new_id,
    normalize_email,
    utcnow,
    well_formed,
)
from pulsebeam.control.records import KeyInfo
from pulsebeam.control.schema import (
    accounts,
    analytics,
    audit_events,
    connection_log,
    keys,
    memberships,
    projects,
    usage_daily,
    usage_peers,
)
from pulsebeam.control.views import Actor, AuditEntry, MemberInfo, ProjectInfo, Role
from pulsebeam.errors import ConflictError, InvalidArgumentError, NotFoundError
from pulsebeam.errors import PermissionDeniedError as Forbidden

__all__ = ["AUDIT_KINDS", "MAX_PAGE", "ProjectsMixin", "check_page_limit"]

MAX_PAGE = 500
AUDIT_KINDS = ("account", "token", "project", "member", "key", "ban")
"""The families of audit actions (``key.create``, ``key.delete``, …) ``list_audit`` filters by."""


def _project(row: Any, role: str | None = None) -> ProjectInfo:
    return ProjectInfo(
        id=row.id,
        name=row.name,
        created_at=row.created_at,
        role=None if role is None else Role(role),
    )


def _role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise InvalidArgumentError(
            f"role must be 'owner' or 'member', not {value[:20]!r}"
        ) from None


def check_page_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidArgumentError(f"limit must be between 1 and {MAX_PAGE}")


class ProjectsMixin(StoreBase):
    # -- projects --------------------------------------------------------------------------

    async def create_project(self, name: str, owner_id: str, actor: Actor) -> ProjectInfo:
        name = clean_text(name, "project name", max_len=100)
        info = ProjectInfo(id=new_id("prj"), name=name, created_at=utcnow(), role=Role.OWNER)
        async with self._tx() as conn:
            owner = await conn.scalar(select(accounts.c.email).where(accounts.c.id == owner_id))
            if owner is None:
                raise NotFoundError(f"account {owner_id} not found")
            await conn.execute(
                insert(projects).values(id=info.id, name=name, created_at=info.created_at)
            )
            await conn.execute(
                insert(memberships).values(
                    project_id=info.id,
                    account_id=owner_id,
                    role=Role.OWNER.value,
                    created_at=info.created_at,
                )
            )
            await self._audit(
                conn,
                actor,
                "project.create",
                project_id=info.id,
                target=info.id,
                details={"name": name, "owner": owner},
            )
        return info

    async def list_projects(self, account_id: str | None = None) -> list[ProjectInfo]:
        """The projects an account belongs to (with its role), or every project (``None``)."""
        async with self._read() as conn:
            if account_id is None:
                rows = await conn.execute(select(projects).order_by(projects.c.created_at))
                return [_project(row) for row in rows]
            query = (
                select(projects, memberships.c.role)
                .join(memberships, memberships.c.project_id == projects.c.id)
                .where(memberships.c.account_id == account_id)
                .order_by(projects.c.created_at, projects.c.id)
            )
            return [_project(row, row.role) for row in await conn.execute(query)]

    async def get_project(self, project_id: str, account_id: str | None = None) -> ProjectInfo:
        """The project, as seen by ``account_id`` (None: the admin); NotFoundError otherwise."""
        async with self._read() as conn:
            return await self._get_project(conn, project_id, account_id)

    async def _get_project(
        self, conn: AsyncConnection, project_id: str, account_id: str | None
    ) -> ProjectInfo:
        if not well_formed("prj", project_id):
            row = None
        elif account_id is None:
            row = (await conn.execute(select(projects).where(projects.c.id == project_id))).first()
            role = None
        else:
            query = (
                select(projects, memberships.c.role)
                .join(memberships, memberships.c.project_id == projects.c.id)
                .where(projects.c.id == project_id, memberships.c.account_id == account_id)
            )
            row = (await conn.execute(query)).first()
            role = None if row is None else row.role
        if row is None:
            raise NotFoundError(f"project {project_id[:40]!r} not found")
        return _project(row, role)

    async def require_access(
        self, project_id: str, account_id: str, *, owner: bool = False
    ) -> ProjectInfo:
        """The project if the account is a member (an owner, with ``owner``); else an error:
        NotFoundError for non-members (no existence leak), PermissionDenied for non-owners."""
        project = await self.get_project(project_id, account_id)
        if owner and project.role is not Role.OWNER:
            raise Forbidden("only an owner of this project can manage its members")
        return project

    async def rename_project(self, project_id: str, name: str, actor: Actor) -> ProjectInfo:
        name = clean_text(name, "project name", max_len=100)
        async with self._tx() as conn:
            old = await self._get_project(conn, project_id, None)
            await conn.execute(
                update(projects).where(projects.c.id == project_id).values(name=name)
            )
            await self._audit(
                conn,
                actor,
                "project.rename",
                project_id=project_id,
                target=project_id,
                details={"from": old.name, "to": name},
            )
        return ProjectInfo(id=old.id, name=name, created_at=old.created_at)

    async def delete_project(self, project_id: str, actor: Actor) -> list[KeyInfo]:
        """Delete a project with its keys, bans, members and telemetry; returns the deleted keys
        (the caller publishes a KeyDeleted event for each)."""
        async with self._tx() as conn:
            project = await self._get_project(conn, project_id, None)
            rows = await conn.execute(select(keys).where(keys.c.project_id == project_id))
            deleted = [
                KeyInfo(r.kid, r.project_id, r.public_key, r.label, r.created_at) for r in rows
            ]
            for table in (usage_daily, usage_peers, connection_log, analytics):
                await conn.execute(delete(table).where(table.c.project_id == project_id))
            # Keys, bans and memberships go by ON DELETE CASCADE.
            await conn.execute(delete(projects).where(projects.c.id == project_id))
            await self._audit(
                conn,
                actor,
                "project.delete",
                project_id=project_id,
                target=project_id,
                details={"name": project.name, "keys": [k.kid for k in deleted]},
            )
        return deleted

    # -- members ---------------------------------------------------------------------------

    async def list_members(self, project_id: str) -> list[MemberInfo]:
        query = (
            select(memberships, accounts.c.email)
            .join(accounts, accounts.c.id == memberships.c.account_id)
            .where(memberships.c.project_id == project_id)
            .order_by(memberships.c.created_at, accounts.c.email)
        )
        async with self._read() as conn:
            return [
                MemberInfo(row.account_id, row.email, Role(row.role), row.created_at)
                for row in await conn.execute(query)
            ]

    async def add_member(self, project_id: str, email: str, role: str, actor: Actor) -> MemberInfo:
        role_ = _role(role)
        email = normalize_email(email)
        now = utcnow()
        async with self._tx() as conn:
            await self._get_project(conn, project_id, None)
            account_id = await conn.scalar(select(accounts.c.id).where(accounts.c.email == email))
            if account_id is None:
                raise NotFoundError(f"no account with email {email}: it must be created first")
            existing = await conn.scalar(
                select(memberships.c.role).where(
                    memberships.c.project_id == project_id, memberships.c.account_id == account_id
                )
            )
            if existing is not None:
                raise ConflictError(f"{email} is already a member of this project")
            await conn.execute(
                insert(memberships).values(
                    project_id=project_id, account_id=account_id, role=role_.value, created_at=now
                )
            )
            await self._audit(
                conn,
                actor,
                "member.add",
                project_id=project_id,
                target=account_id,
                details={"email": email, "role": role_.value},
            )
        return MemberInfo(account_id, email, role_, now)

    async def set_member_role(
        self, project_id: str, account_id: str, role: str, actor: Actor
    ) -> MemberInfo:
        role_ = _role(role)
        async with self._tx() as conn:
            member = await self._member(conn, project_id, account_id)
            if member.role is Role.OWNER and role_ is not Role.OWNER:
                await self._keep_an_owner(conn, project_id)
            await conn.execute(
                update(memberships)
                .where(
                    memberships.c.project_id == project_id, memberships.c.account_id == account_id
                )
                .values(role=role_.value)
            )
            await self._audit(
                conn,
                actor,
                "member.role",
                project_id=project_id,
                target=account_id,
                details={"email": member.email, "from": member.role.value, "to": role_.value},
            )
        return MemberInfo(account_id, member.email, role_, member.added_at)

    async def remove_member(self, project_id: str, account_id: str, actor: Actor) -> None:
        async with self._tx() as conn:
            member = await self._member(conn, project_id, account_id)
            if member.role is Role.OWNER:
                await self._keep_an_owner(conn, project_id)
            await conn.execute(
                delete(memberships).where(
                    memberships.c.project_id == project_id, memberships.c.account_id == account_id
                )
            )
            await self._audit(
                conn,
                actor,
                "member.remove",
                project_id=project_id,
                target=account_id,
                details={"email": member.email},
            )

    async def _member(self, conn: AsyncConnection, project_id: str, account_id: str) -> MemberInfo:
        if not well_formed("acc", account_id):
            raise NotFoundError(f"account {account_id[:40]!r} is not a member of this project")
        query = (
            select(memberships, accounts.c.email)
            .join(accounts, accounts.c.id == memberships.c.account_id)
            .where(memberships.c.project_id == project_id, memberships.c.account_id == account_id)
        )
        row = (await conn.execute(query)).first()
        if row is None:
            raise NotFoundError(f"account {account_id[:40]!r} is not a member of this project")
        return MemberInfo(row.account_id, row.email, Role(row.role), row.created_at)

    @staticmethod
    async def _keep_an_owner(conn: AsyncConnection, project_id: str) -> None:
        # Row locks on the owners (PostgreSQL) stop two owners demoting each other at once.
        owners = await conn.execute(
            select(memberships.c.account_id)
            .where(memberships.c.project_id == project_id, memberships.c.role == Role.OWNER.value)
            .with_for_update()
        )
        if len(owners.all()) <= 1:
            raise ConflictError(
                "a project needs at least one owner: make another member owner first"
            )

    # -- audit log -------------------------------------------------------------------------

    async def list_audit(
        self,
        project_id: str | None = None,
        *,
        kind: str = "",
        actor: str = "",
        before_id: int | None = None,
        limit: int = 50,
    ) -> list[AuditEntry]:
        """Audit events, newest first; page with ``before_id`` = the last id of a page. With no
        project, every event (the admin's view). ``kind`` keeps one family of actions (one of
        :data:`AUDIT_KINDS`), ``actor`` the events whose actor contains it (any case)."""
        check_page_limit(limit)
        if kind and kind not in AUDIT_KINDS:
            raise InvalidArgumentError(
                f"unknown kind of action {kind[:20]!r}: use one of {', '.join(AUDIT_KINDS)}"
            )
        actor = clean_text(actor, "the actor filter", max_len=254, required=False)
        query = select(audit_events).order_by(audit_events.c.id.desc()).limit(limit)
        if project_id is not None:
            query = query.where(audit_events.c.project_id == project_id)
        if kind:
            query = query.where(audit_events.c.action.startswith(kind + ".", autoescape=True))
        if actor:
            query = query.where(
                func.lower(audit_events.c.actor).contains(actor.lower(), autoescape=True)
            )
        if before_id is not None:
            query = query.where(audit_events.c.id < before_id)
        async with self._read() as conn:
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
