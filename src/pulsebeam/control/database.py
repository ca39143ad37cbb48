"""Engine construction and migrations for the control-plane database.

SQLite (one file in the data dir) is the embedded default; PostgreSQL (``postgresql+asyncpg://``)
serves many nodes. Alembic migrations run to head on every start, under an advisory lock on
PostgreSQL so that nodes starting together do not race.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Connection, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from pulsebeam.config import StoreConfig
from pulsebeam.errors import ConfigError

__all__ = ["SQLITE_FILE", "WRITE_OPTION", "create_engine", "database_url", "migrate"]

logger = logging.getLogger(__name__)

SQLITE_FILE = "pulsebeam.db"
MIGRATIONS = Path(__file__).parent / "migrations"
_MIGRATION_LOCK = 0x7075_6C73  # arbitrary constant shared by every node ("puls")
WRITE_OPTION = "pulsebeam_write"
"""Execution option marking a connection's transaction as a write (see ``StoreBase._tx``)."""
_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}


def database_url(config: StoreConfig) -> str:
    """The SQLAlchemy URL for a config: ``--database-url`` or a SQLite file in ``--data-dir``."""
    if config.database_url is None:
        return f"sqlite+aiosqlite:///{config.data_dir / SQLITE_FILE}"
    try:
        url = make_url(config.database_url)
    except ArgumentError:
        raise ConfigError(
            "--database-url is not a database URL; expected e.g."
            " postgresql+asyncpg://user:password@127.0.0.1:5432/pulsebeam"
        ) from None
    backend = url.get_backend_name()
    if backend not in _DRIVERS:
        raise ConfigError(f"--database-url: unsupported database {backend!r}; use postgresql")
    if url.drivername != _DRIVERS[backend]:
        # Only the asyncio drivers work here; accept the plain scheme for convenience.
        url = url.set(drivername=_DRIVERS[backend])
    return url.render_as_string(hide_password=False)


def create_engine(config: StoreConfig) -> AsyncEngine:
    url = database_url(config)
    if config.database_url is None:
        try:
            config.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create --data-dir {config.data_dir}: {exc}") from None
    engine = create_async_engine(url, pool_pre_ping=url.startswith("postgresql"))
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Foreign keys are off by default in SQLite; WAL lets readers run beside the one writer.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()
    # The driver would open transactions only at the first INSERT/UPDATE, leaving the reads
    # before it outside; we open them ourselves (see _sqlite_begin).
    dbapi_connection.isolation_level = None


def _sqlite_begin(conn: Connection) -> None:
    # A write transaction takes the write lock up front (BEGIN IMMEDIATE), so its reads and
    # writes are one atomic step and concurrent writers queue (busy_timeout) instead of failing.
    # Reads stay in autocommit: each is one statement, atomic on its own, and skipping
    # BEGIN/ROLLBACK halves the round trips of a cache-miss key lookup.
    if conn.get_execution_options().get(WRITE_OPTION, False):
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _upgrade(connection: Connection, revision: str) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, revision)


def _downgrade(connection: Connection, revision: str) -> None:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    command.downgrade(cfg, revision)


async def migrate(engine: AsyncEngine, revision: str = "head", *, down: bool = False) -> None:
    """Apply migrations up to (or, with ``down``, back to) ``revision`` in one transaction."""
    async with engine.connect() as conn:
        await conn.execution_options(**{WRITE_OPTION: True})
        async with conn.begin():
            await conn.run_sync(_downgrade if down else _upgrade, revision)
    logger.info("database schema at %s (%s)", revision, engine.dialect.name)
