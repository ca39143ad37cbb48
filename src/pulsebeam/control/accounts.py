"""Accounts, console sessions and personal API tokens.

Session cookies and API tokens are random 256-bit values; only their SHA-256 is stored, so a
database leak reveals no usable credential, and lookups by hash need no constant-time compare.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from sqlalchemy import delete, func, insert, select, update

from pulsebeam.control import passwords
from pulsebeam.control.base import (
    StoreBase,
    check_future,
    clean_text,
    new_id,
    normalize_email,
    utcnow,
    well_formed,
)
from pulsebeam.control.schema import accounts, api_tokens, web_sessions
from pulsebeam.control.views import AccountInfo, Actor, ApiTokenInfo, CreatedApiToken, SessionInfo
from pulsebeam.errors import ConflictError, InvalidArgumentError, NotFoundError

__all__ = ["API_TOKEN_PREFIX", "SESSION_TTL", "AccountsMixin"]

SESSION_TTL = timedelta(hours=12)
API_TOKEN_PREFIX = "pbt_"  # noqa: S105 - a prefix, not a secret
_TOKEN_TOUCH = timedelta(minutes=5)  # write last_used_at at most this often per token


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _account(row: Any) -> AccountInfo:
    return AccountInfo(id=row.id, email=row.email, created_at=row.created_at)


def _token_info(row: Any) -> ApiTokenInfo:
    return ApiTokenInfo(
        id=row.id,
        name=row.name,
        created_at=row.created_at,
        expires_at=row.expires_at,
        last_used_at=row.last_used_at,
    )


class AccountsMixin(StoreBase):
    _hasher: PasswordHasher

    async def has_accounts(self) -> bool:
        """Whether any account exists (the console offers first-run setup when none does)."""
        async with self._read() as conn:
            return (await conn.scalar(select(func.count()).select_from(accounts))) != 0

    async def create_first_account(self, email: str, password: str) -> AccountInfo:
        """Create the first account; refused once any account exists (first-run setup only)."""
        return await self._create_account(email, password, Actor("setup"), first=True)

    async def create_account(self, email: str, password: str, actor: Actor) -> AccountInfo:
        return await self._create_account(email, password, actor, first=False)

    async def _create_account(
        self, email: str, password: str, actor: Actor, *, first: bool
    ) -> AccountInfo:
        email = normalize_email(email)
        passwords.check_password_rules(password, email)
        password_hash = await passwords.hash_password(self._hasher, password)
        info = AccountInfo(id=new_id("acc"), email=email, created_at=utcnow())
        async with self._tx() as conn:
            if first:
                await self._lock(conn, "first-account")
            if first and await conn.scalar(select(func.count()).select_from(accounts)):
                raise ConflictError("an account already exists: sign in instead")
            if await conn.scalar(select(accounts.c.id).where(accounts.c.email == email)):
                raise ConflictError(f"an account with email {email} already exists")
            await conn.execute(
                insert(accounts).values(
                    id=info.id,
                    email=email,
                    password_hash=password_hash,
                    created_at=info.created_at,
                )
            )
            who = Actor(email, info.id) if first else actor
            await self._audit(conn, who, "account.create", target=info.id, details={"email": email})
        return info

    async def list_accounts(self) -> list[AccountInfo]:
        query = select(accounts).order_by(accounts.c.created_at, accounts.c.email)
        async with self._read() as conn:
            return [_account(row) for row in await conn.execute(query)]

    async def get_account(self, account_id: str) -> AccountInfo | None:
        if not well_formed("acc", account_id):
            return None
        async with self._read() as conn:
            row = (await conn.execute(select(accounts).where(accounts.c.id == account_id))).first()
        return None if row is None else _account(row)

    async def find_account(self, email: str) -> AccountInfo | None:
        try:
            email = normalize_email(email)
        except InvalidArgumentError:
            return None
        async with self._read() as conn:
            row = (await conn.execute(select(accounts).where(accounts.c.email == email))).first()
        return None if row is None else _account(row)

    async def authenticate(self, email: str, password: str) -> AccountInfo | None:
        """The account for these credentials, or None; unknown emails take as long as known."""
        row = None
        try:
            normalized = normalize_email(email)
        except InvalidArgumentError:
            normalized = None
        if normalized is not None:
            async with self._read() as conn:
                query = select(accounts).where(accounts.c.email == normalized)
                row = (await conn.execute(query)).first()
        ok = await passwords.verify(
            self._hasher, None if row is None else row.password_hash, password
        )
        return _account(row) if ok and row is not None else None

    async def change_password(self, account_id: str, password: str, actor: Actor) -> None:
        account = await self.get_account(account_id)
        if account is None:
            raise NotFoundError(f"account {account_id} not found")
        passwords.check_password_rules(password, account.email)
        password_hash = await passwords.hash_password(self._hasher, password)
        async with self._tx() as conn:
            await conn.execute(
                update(accounts)
                .where(accounts.c.id == account_id)
                .values(password_hash=password_hash)
            )
            # Signing in again everywhere is the point of changing a password.
            await conn.execute(delete(web_sessions).where(web_sessions.c.account_id == account_id))
            await self._audit(conn, actor, "account.password", target=account_id)

    # -- console sessions ------------------------------------------------------------------

    async def create_session(
        self, account: AccountInfo, ttl: timedelta = SESSION_TTL
    ) -> SessionInfo:
        token, now = secrets.token_urlsafe(32), utcnow()
        session = SessionInfo(
            account=account, csrf_token=secrets.token_urlsafe(32), expires_at=now + ttl, token=token
        )
        async with self._tx() as conn:
            # Expired sessions are swept at sign-in, which bounds the table without a timer.
            await conn.execute(delete(web_sessions).where(web_sessions.c.expires_at <= now))
            await conn.execute(
                insert(web_sessions).values(
                    id_hash=_digest(token),
                    account_id=account.id,
                    csrf_token=session.csrf_token,
                    created_at=now,
                    expires_at=session.expires_at,
                )
            )
        return session

    async def get_session(self, token: str) -> SessionInfo | None:
        """The live session for a cookie value, or None when unknown or expired."""
        query = (
            select(web_sessions, accounts.c.email, accounts.c.created_at.label("account_created"))
            .join(accounts, accounts.c.id == web_sessions.c.account_id)
            .where(web_sessions.c.id_hash == _digest(token), web_sessions.c.expires_at > utcnow())
        )
        async with self._read() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        account = AccountInfo(id=row.account_id, email=row.email, created_at=row.account_created)
        return SessionInfo(account=account, csrf_token=row.csrf_token, expires_at=row.expires_at)

    async def delete_session(self, token: str) -> None:
        async with self._tx() as conn:
            await conn.execute(delete(web_sessions).where(web_sessions.c.id_hash == _digest(token)))

    # -- personal API tokens ---------------------------------------------------------------

    async def create_api_token(
        self, account_id: str, name: str, expires_at: datetime | None, actor: Actor
    ) -> CreatedApiToken:
        name = clean_text(name, "token name", max_len=100)
        expires_at = check_future(expires_at, "the token's expires_at")
        now = utcnow()
        token = API_TOKEN_PREFIX + secrets.token_urlsafe(32)
        info = ApiTokenInfo(
            id=new_id("tok"), name=name, created_at=now, expires_at=expires_at, last_used_at=None
        )
        async with self._tx() as conn:
            await conn.execute(
                insert(api_tokens).values(
                    id=info.id,
                    account_id=account_id,
                    name=name,
                    token_hash=_digest(token),
                    created_at=now,
                    expires_at=expires_at,
                )
            )
            await self._audit(conn, actor, "token.create", target=info.id, details={"name": name})
        return CreatedApiToken(info=info, token=token)

    async def list_api_tokens(self, account_id: str) -> list[ApiTokenInfo]:
        query = (
            select(api_tokens)
            .where(api_tokens.c.account_id == account_id)
            .order_by(api_tokens.c.created_at, api_tokens.c.id)
        )
        async with self._read() as conn:
            return [_token_info(row) for row in await conn.execute(query)]

    async def delete_api_token(self, account_id: str, token_id: str, actor: Actor) -> None:
        if not well_formed("tok", token_id):
            raise NotFoundError(f"API token {token_id[:40]!r} not found")
        async with self._tx() as conn:
            result = await conn.execute(
                delete(api_tokens).where(
                    api_tokens.c.id == token_id, api_tokens.c.account_id == account_id
                )
            )
            if result.rowcount == 0:
                raise NotFoundError(f"API token {token_id[:40]!r} not found")
            await self._audit(conn, actor, "token.delete", target=token_id)

    async def account_for_api_token(self, token: str) -> AccountInfo | None:
        """The account owning a live personal API token, or None."""
        if not token.startswith(API_TOKEN_PREFIX):
            return None
        now = utcnow()
        query = (
            select(
                api_tokens.c.id.label("token_id"),
                api_tokens.c.expires_at,
                api_tokens.c.last_used_at,
                accounts.c.id.label("account_id"),
                accounts.c.email,
                accounts.c.created_at,
            )
            .join(accounts, accounts.c.id == api_tokens.c.account_id)
            .where(api_tokens.c.token_hash == _digest(token))
        )
        async with self._read() as conn:
            row = (await conn.execute(query)).first()
        if row is None or (row.expires_at is not None and row.expires_at <= now):
            return None
        if row.last_used_at is None or now - row.last_used_at > _TOKEN_TOUCH:
            async with self._tx() as conn:
                await conn.execute(
                    update(api_tokens)
                    .where(api_tokens.c.id == row.token_id)
                    .values(last_used_at=now)
                )
        return AccountInfo(id=row.account_id, email=row.email, created_at=row.created_at)
