"""Migrations from an empty database, on both backends: they build exactly the tables the code
declares, go back down cleanly, and run again (idempotent at head)."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, inspect

from pulsebeam.config import StoreConfig
from pulsebeam.control.database import create_engine, migrate
from pulsebeam.control.schema import metadata
from pulsebeam.control.store import Store


def _diff(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


def _tables(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names()) - {"alembic_version"}


async def test_migrations_match_the_schema_and_reverse(store_config: StoreConfig) -> None:
    engine = create_engine(store_config)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(_tables) == set()
        await migrate(engine)
        async with engine.connect() as conn:
            assert await conn.run_sync(_tables) == set(metadata.tables)
            assert await conn.run_sync(_diff) == []
        await migrate(engine)  # already at head: nothing to do, nothing breaks
        await migrate(engine, "base", down=True)
        async with engine.connect() as conn:
            assert await conn.run_sync(_tables) == set()
        await migrate(engine)
        async with engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
    finally:
        await engine.dispose()


async def test_open_migrates_an_empty_database(store_config: StoreConfig) -> None:
    store = await Store.open(store_config)
    try:
        assert not await store.has_accounts()
        assert await store.list_keys() == []
    finally:
        await store.close()
    reopened = await Store.open(store_config)  # a second start finds the schema at head
    await reopened.close()
