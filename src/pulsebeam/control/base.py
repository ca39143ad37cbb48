"""What every part of the store shares: the engine, transactions, ids, input rules, the audit
writer. The store's mixins build on :class:`StoreBase`."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pulsebeam.control.database import WRITE_OPTION
from pulsebeam.control.schema import audit_events
from pulsebeam.control.views import Actor
from pulsebeam.errors import ConflictError, InvalidArgumentError

logger = logging.getLogger(__name__)

__all__ = [
    "StoreBase",
    "check_future",
    "clean_text",
    "new_id",
    "normalize_email",
    "utcnow",
    "well_formed",
]

# A pragmatic address check (one @, a dot in the domain, no spaces): delivery is never attempted,
# the address is only a sign-in name.
_EMAIL_RE = re.compile(r"[^@\s\x00-\x1f\x7f]{1,64}@[^@\s.\x00-\x1f\x7f]+(\.[^@\s.\x00-\x1f\x7f]+)+")
_ID_RE = re.compile(r"[a-z]{3}_[0-9a-f]{16}")


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def well_formed(prefix: str, value: str) -> bool:
    """Whether ``value`` looks like an id we issue (``prj_`` + 16 hex, …). Anything else cannot
    exist, and is never sent to the database (PostgreSQL refuses NUL characters in text)."""
    return value.startswith(prefix + "_") and _ID_RE.fullmatch(value) is not None


def normalize_email(email: str) -> str:
    email = email.strip().lower()
    if len(email) > 254 or not _EMAIL_RE.fullmatch(email):
        raise InvalidArgumentError(
            f"{email[:80]!r} is not an email address (like name@example.com)"
        )
    return email


def clean_text(value: str, what: str, *, max_len: int, required: bool = True) -> str:
    """Strip a display text and check its length; control characters are refused."""
    value = value.strip()
    if required and not value:
        raise InvalidArgumentError(f"{what} must not be empty")
    if len(value) > max_len:
        raise InvalidArgumentError(f"{what} is too long: at most {max_len} characters")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise InvalidArgumentError(f"{what} must not contain control characters")
    return value


def check_future(when: datetime | None, what: str) -> datetime | None:
    """``when`` in UTC, if it is None or an aware datetime after now; else a clear error."""
    if when is None:
        return None
    if when.tzinfo is None:
        raise InvalidArgumentError(f"{what} needs a time zone (e.g. 2030-01-01T00:00:00Z)")
    try:
        when = when.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:00-05:00 is past the last representable day
        raise InvalidArgumentError(f"{what} is out of range") from None
    if when <= utcnow():
        raise InvalidArgumentError(f"{what} must be in the future")
    return when


class StoreBase:
    """The engine and the helpers every store method uses."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[AsyncConnection]:
        """One write transaction: everything in it is written, or nothing is.

        A constraint violation here means a concurrent change won a race that the checks before
        the write could not see (e.g. two adds of one member): a conflict, not a server error.
        """
        try:
            async with self._engine.connect() as conn:
                await conn.execution_options(**{WRITE_OPTION: True})
                async with conn.begin():
                    yield conn
        except IntegrityError as exc:
            logger.info("write refused by a database constraint: %s", exc.orig)
            raise ConflictError("a concurrent change conflicts with this one: try again") from None

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        async with self._engine.connect() as conn:
            yield conn

    async def _lock(self, conn: AsyncConnection, name: str) -> None:
        """Serialise transactions that check something no row lock can hold (an absence).
        SQLite needs nothing: its write transactions already run one at a time."""
        if self.dialect == "postgresql":
            key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})

    @staticmethod
    async def _audit(
        conn: AsyncConnection,
        actor: Actor,
        action: str,
        *,
        project_id: str | None = None,
        target: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        await conn.execute(
            insert(audit_events).values(
                at=utcnow(),
                actor_id=actor.account_id,
                actor=actor.label,
                project_id=project_id,
                action=action,
                target=target,
                details=json.dumps(details or {}, separators=(",", ":"), default=str),
            )
        )
