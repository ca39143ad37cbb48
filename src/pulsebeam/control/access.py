"""API keys (public halves only) and bans: what the signaling and TURN layers read.

Reads here sit on the hot path's cache-miss side, so each is one indexed query. Writes return
the records the caller needs to publish a revocation event after the commit.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from pulsebeam.auth import KeyPair, validate_pattern
from pulsebeam.control.base import StoreBase, check_future, clean_text, new_id, utcnow, well_formed
from pulsebeam.control.records import BanInfo, KeyInfo
from pulsebeam.control.schema import bans, keys, projects
from pulsebeam.control.views import Actor, CreatedKey, KeyDetails
from pulsebeam.errors import NotFoundError

__all__ = ["AccessMixin"]


def _key(row: Any) -> KeyInfo:
    return KeyInfo(
        kid=row.kid,
        project_id=row.project_id,
        public_key=row.public_key,
        label=row.label,
        created_at=row.created_at,
    )


def _ban(row: Any) -> BanInfo:
    return BanInfo(
        id=row.id,
        project_id=row.project_id,
        group_pattern=row.group_pattern,
        peer_pattern=row.peer_pattern,
        reason=row.reason,
        expires_at=row.expires_at,
    )


class AccessMixin(StoreBase):
    # -- keys ------------------------------------------------------------------------------

    async def get_key(self, kid: str) -> KeyInfo | None:
        if not well_formed("kid", kid):
            return None
        async with self._read() as conn:
            row = (await conn.execute(select(keys).where(keys.c.kid == kid))).first()
        return None if row is None else _key(row)

    async def list_keys(self) -> list[KeyInfo]:
        """Every live key (signaling warms its cache with these at start)."""
        async with self._read() as conn:
            return [_key(row) for row in await conn.execute(select(keys))]

    async def list_project_keys(self, project_id: str) -> list[KeyDetails]:
        query = (
            select(keys)
            .where(keys.c.project_id == project_id)
            .order_by(keys.c.created_at, keys.c.kid)
        )
        async with self._read() as conn:
            return [
                KeyDetails(_key(row), created_by=row.created_by, last_used_at=row.last_used_at)
                for row in await conn.execute(query)
            ]

    async def create_key(self, project_id: str, label: str, actor: Actor) -> CreatedKey:
        """A new key pair for a project; only its public half is stored."""
        label = clean_text(label, "key label", max_len=100, required=False)
        pair = KeyPair.generate()
        info = KeyInfo(pair.api_key, project_id, pair.public_key, label, utcnow())
        async with self._tx() as conn:
            await self._require_project(conn, project_id)
            await conn.execute(
                insert(keys).values(
                    kid=info.kid,
                    project_id=project_id,
                    public_key=info.public_key,
                    label=label,
                    created_at=info.created_at,
                    created_by=actor.label,
                )
            )
            await self._audit(
                conn,
                actor,
                "key.create",
                project_id=project_id,
                target=info.kid,
                details={"label": label},
            )
        return CreatedKey(key=info, api_secret=pair.api_secret)

    async def delete_key(self, kid: str, actor: Actor, *, project_id: str | None = None) -> KeyInfo:
        """Delete a key (of ``project_id`` when given); the caller publishes ``KeyDeleted``."""
        query = select(keys).where(keys.c.kid == kid)
        if project_id is not None:
            query = query.where(keys.c.project_id == project_id)
        async with self._tx() as conn:
            row = (await conn.execute(query)).first() if well_formed("kid", kid) else None
            if row is None:
                raise NotFoundError(f"key {kid[:40]!r} not found")
            await conn.execute(delete(keys).where(keys.c.kid == kid))
            await self._audit(
                conn,
                actor,
                "key.delete",
                project_id=row.project_id,
                target=kid,
                details={"label": row.label},
            )
        return _key(row)

    # -- bans ------------------------------------------------------------------------------

    async def list_bans(self, project_id: str | None = None) -> list[BanInfo]:
        """Active (unexpired) bans, of one project or of all."""
        query = (
            select(bans)
            .where(or_(bans.c.expires_at.is_(None), bans.c.expires_at > utcnow()))
            .order_by(bans.c.created_at, bans.c.id)
        )
        if project_id is not None:
            query = query.where(bans.c.project_id == project_id)
        async with self._read() as conn:
            return [_ban(row) for row in await conn.execute(query)]

    async def add_ban(
        self,
        project_id: str,
        group_pattern: str,
        peer_pattern: str,
        actor: Actor,
        *,
        reason: str = "",
        expires_at: datetime | None = None,
    ) -> BanInfo:
        """Ban the peers matching both patterns; the caller publishes ``BanAdded``."""
        validate_pattern(group_pattern, "group pattern")
        validate_pattern(peer_pattern, "peer pattern")
        reason = clean_text(reason, "ban reason", max_len=500, required=False)
        expires_at = check_future(expires_at, "a ban's end (expires_at)")
        now = utcnow()
        ban = BanInfo(new_id("ban"), project_id, group_pattern, peer_pattern, reason, expires_at)
        async with self._tx() as conn:
            await self._require_project(conn, project_id)
            await conn.execute(
                insert(bans).values(
                    id=ban.id,
                    project_id=project_id,
                    group_pattern=group_pattern,
                    peer_pattern=peer_pattern,
                    reason=reason,
                    created_at=now,
                    created_by=actor.label,
                    expires_at=expires_at,
                )
            )
            await self._audit(
                conn,
                actor,
                "ban.add",
                project_id=project_id,
                target=ban.id,
                details={
                    "group_pattern": group_pattern,
                    "peer_pattern": peer_pattern,
                    "reason": reason,
                    "expires_at": expires_at.isoformat() if expires_at else None,
                },
            )
        return ban

    async def remove_ban(
        self, ban_id: str, actor: Actor, *, project_id: str | None = None
    ) -> BanInfo:
        """Lift a ban (of ``project_id`` when given); the caller publishes ``BanRemoved``."""
        query = select(bans).where(bans.c.id == ban_id)
        if project_id is not None:
            query = query.where(bans.c.project_id == project_id)
        async with self._tx() as conn:
            row = (await conn.execute(query)).first() if well_formed("ban", ban_id) else None
            if row is None:
                raise NotFoundError(f"ban {ban_id[:40]!r} not found")
            await conn.execute(delete(bans).where(bans.c.id == ban_id))
            await self._audit(
                conn,
                actor,
                "ban.remove",
                project_id=row.project_id,
                target=ban_id,
                details={"group_pattern": row.group_pattern, "peer_pattern": row.peer_pattern},
            )
        return _ban(row)

    @staticmethod
    async def _require_project(conn: AsyncConnection, project_id: str) -> None:
        query = select(projects.c.id).where(projects.c.id == project_id)
        if not well_formed("prj", project_id) or await conn.scalar(query) is None:
            raise NotFoundError(f"project {project_id[:40]!r} not found")
