"""Small helpers shared by the control-plane tests."""

from __future__ import annotations

from datetime import datetime

from argon2 import PasswordHasher
from sqlalchemy import func, select, update

from pulsebeam.control.schema import audit_events, bans, keys
from pulsebeam.control.store import Store
from pulsebeam.control.views import AccountInfo, Actor

PASSWORD = "correct horse battery"
# Still argon2id, at a cost that keeps the suite fast; the default cost is used by the CLI tests.
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


async def audit_count(store: Store) -> int:
    async with store._engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(audit_events)) or 0)


async def backdate_key(store: Store, kid: str, created_at: datetime) -> None:
    """Make a key look old (the rotation flag depends on its age)."""
    async with store._engine.begin() as conn:
        await conn.execute(update(keys).where(keys.c.kid == kid).values(created_at=created_at))


async def expire_ban(store: Store, ban_id: str, at: datetime) -> None:
    async with store._engine.begin() as conn:
        await conn.execute(update(bans).where(bans.c.id == ban_id).values(expires_at=at))


async def new_account(store: Store, email: str) -> tuple[AccountInfo, Actor]:
    account = await store.create_account(email, PASSWORD, Actor.admin_cli())
    return account, Actor(account.email, account.id)
