"""Shared plumbing of the admin commands (``account``, ``project``, ``key create|list|delete``,
``ban``): they work on the data dir or database directly, for bootstrap and scripts.

A running server learns of keys deleted and bans changed here only through its cache-miss path
(it re-reads the store when a key is not cached, and bans when it refreshes them): these commands
have no line to its event router. Delete keys through the REST API or console for an immediate
effect on open streams.
"""

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from pulsebeam.config import load_config
from pulsebeam.control.events import ControlEvent
from pulsebeam.control.views import Actor

if TYPE_CHECKING:
    from pulsebeam.control.store import Store

__all__ = [
    "ACTOR",
    "ConfigFile",
    "DataDir",
    "DatabaseUrl",
    "JsonFlag",
    "no_events",
    "output",
    "run_with_store",
]

T = TypeVar("T")
ACTOR = Actor.admin_cli()

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="directory of the SQLite database (env PULSEBEAM_DATA_DIR)",
        show_default=False,
    ),
]
DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="postgresql+asyncpg://… instead of SQLite (env PULSEBEAM_DATABASE_URL)",
        show_default=False,
    ),
]
ConfigFile = Annotated[
    Path | None, typer.Option("--config", help="TOML settings file", show_default=False)
]
JsonFlag = Annotated[bool, typer.Option("--json", help="machine-readable output")]


async def no_events(event: ControlEvent) -> None:
    """The admin CLI publishes nowhere (see the module docstring)."""


def run_with_store(
    data_dir: Path | None,
    database_url: str | None,
    config_file: Path | None,
    action: "Callable[[Store], Awaitable[T]]",
) -> T:
    """Open the store named by the flags / environment / config file, run ``action``, close."""
    # Imported here: SQLAlchemy and Alembic would slow every other command's start.
    from pulsebeam.control.store import Store

    flags = {"data-dir": data_dir, "database-url": database_url}
    config = load_config(config_file, flags=flags).store

    async def run() -> T:
        store = await Store.open(config)
        try:
            return await action(store)
        finally:
            await store.close()

    return asyncio.run(run())


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def output(data: dict[str, Any] | list[dict[str, Any]], as_json: bool) -> None:
    """Print a record (``name: value`` lines) or a list of them (one line each), or JSON."""
    if as_json:
        typer.echo(json.dumps(data, default=_jsonable))
        return
    if isinstance(data, dict):
        for name, value in data.items():
            typer.echo(f"{name}: {_jsonable(value) if value is not None else '-'}")
        return
    for row in data:
        typer.echo("  ".join(str(_jsonable(v)) if v is not None else "-" for v in row.values()))
