"""Choosing the database from the settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from pulsebeam.config import StoreConfig
from pulsebeam.control.database import database_url
from pulsebeam.control.store import Store
from pulsebeam.errors import ConfigError, UnavailableError


def test_sqlite_in_the_data_dir_by_default(tmp_path: Path) -> None:
    url = database_url(StoreConfig(data_dir=tmp_path))
    assert url == f"sqlite+aiosqlite:///{tmp_path}/pulsebeam.db"


def test_postgres_urls_get_the_asyncio_driver(tmp_path: Path) -> None:
    config = StoreConfig(data_dir=tmp_path, database_url="postgresql://u:pw@127.0.0.1:5/db")
    assert database_url(config) == "postgresql+asyncpg://u:pw@127.0.0.1:5/db"


@pytest.mark.parametrize(
    ("url", "message"),
    [("mysql://u@127.0.0.1/db", "unsupported database 'mysql'"), ("::nope::", "not a database")],
)
def test_bad_database_urls_are_config_errors(tmp_path: Path, url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        database_url(StoreConfig(data_dir=tmp_path, database_url=url))


async def test_open_creates_the_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "a" / "b"
    store = await Store.open(StoreConfig(data_dir=data_dir))
    await store.close()
    assert (data_dir / "pulsebeam.db").is_file()


async def test_unusable_data_dir_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match="cannot create --data-dir"):
        await Store.open(StoreConfig(data_dir=blocker / "sub"))


async def test_unreachable_database_is_a_clear_error(tmp_path: Path) -> None:
    # Port 1 on loopback: nothing listens there.
    url = "postgresql://someone:hunter2hunter2@127.0.0.1:1/pulsebeam"
    with pytest.raises(UnavailableError, match="cannot open the database") as caught:
        await Store.open(StoreConfig(data_dir=tmp_path, database_url=url))
    assert "hunter2" not in str(caught.value)
    assert "127.0.0.1:1" in str(caught.value)
