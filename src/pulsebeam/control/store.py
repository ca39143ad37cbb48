"""The control-plane store: one object over the database for every consumer.

Signaling and TURN use the fast reads (``get_key``, ``list_keys``, ``list_bans``) and the batched
writes (``mark_keys_used``, ``record_*``); the REST API, console and admin CLI use the rest. The
methods live in mixins by subject (accounts, projects, access, telemetry); every write is one
transaction and leaves an audit event.
"""

from __future__ import annotations

import logging

from argon2 import PasswordHasher
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from pulsebeam.config import StoreConfig
from pulsebeam.control.access import AccessMixin
from pulsebeam.control.accounts import AccountsMixin
from pulsebeam.control.database import create_engine, migrate
from pulsebeam.control.passwords import DEFAULT_HASHER
from pulsebeam.control.projects import ProjectsMixin
from pulsebeam.control.telemetry import Retention, TelemetryMixin
from pulsebeam.errors import UnavailableError

__all__ = ["Store"]

logger = logging.getLogger(__name__)


class Store(AccountsMixin, ProjectsMixin, AccessMixin, TelemetryMixin):
    """Open with :meth:`open`; close with :meth:`close`."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        retention: Retention | None = None,
        hasher: PasswordHasher | None = None,
    ) -> None:
        super().__init__(engine)
        self._retention = retention or Retention()
        self._hasher = hasher or DEFAULT_HASHER

    @classmethod
    async def open(
        cls,
        config: StoreConfig,
        *,
        retention: Retention | None = None,
        hasher: PasswordHasher | None = None,
    ) -> Store:
        """Connect (creating the SQLite data dir if needed) and migrate the schema to head.

        ``retention`` sets how long logs are kept; ``hasher`` the argon2id cost of passwords.
        """
        engine = create_engine(config)
        try:
            await migrate(engine)
        except (DBAPIError, OSError) as exc:
            await engine.dispose()
            where = engine.url.render_as_string(hide_password=True)
            reason = exc.orig if isinstance(exc, DBAPIError) else exc
            raise UnavailableError(f"cannot open the database {where}: {reason}") from None
        except BaseException:
            await engine.dispose()
            raise
        store = cls(engine, retention=retention, hasher=hasher)
        logger.info("control store open (%s)", engine.dialect.name)
        return store

    async def close(self) -> None:
        await self._engine.dispose()
