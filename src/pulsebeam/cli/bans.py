"""``pulsebeam ban add|list|remove``: ban and remove bad actors, offline. See
:mod:`pulsebeam.cli.admin` for how a running server learns of changes made here."""

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pulsebeam.cli.admin import (
    ACTOR,
    ConfigFile,
    DatabaseUrl,
    DataDir,
    JsonFlag,
    output,
    run_with_store,
)
from pulsebeam.control.records import BanInfo

app = typer.Typer(
    help="Bans: refuse peers matching a group and peer pattern.", no_args_is_help=True
)

if TYPE_CHECKING:
    from pulsebeam.control.store import Store


def _row(ban: BanInfo) -> dict[str, Any]:
    return {
        "id": ban.id,
        "project_id": ban.project_id,
        "group_pattern": ban.group_pattern,
        "peer_pattern": ban.peer_pattern,
        "reason": ban.reason,
        "expires_at": ban.expires_at,
    }


@app.command("add")
def add(
    project: Annotated[str, typer.Option(help="project id (prj_…)", show_default=False)],
    peer: Annotated[str, typer.Option(help="peer id pattern, e.g. 'bob' or 'bot*'")],
    group: Annotated[str, typer.Option(help="group id pattern")] = "*",
    reason: Annotated[str, typer.Option(help="why (kept in the audit log)")] = "",
    duration: Annotated[
        int | None, typer.Option(min=1, help="seconds until the ban ends (default: never)")
    ] = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    config_file: ConfigFile = None,
    as_json: JsonFlag = False,
) -> None:
    """Ban the peers of a project that match both patterns."""
    expires = None if duration is None else datetime.now(UTC) + timedelta(seconds=duration)

    async def action(store: "Store") -> BanInfo:
        return await store.add_ban(project, group, peer, ACTOR, reason=reason, expires_at=expires)

    output(_row(run_with_store(data_dir, database_url, config_file, action)), as_json)


@app.command("list")
def list_bans(
    project: Annotated[
        str | None, typer.Option(help="only this project (default: all)", show_default=False)
    ] = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    config_file: ConfigFile = None,
    as_json: JsonFlag = False,
) -> None:
    """List active bans."""

    async def action(store: "Store") -> list[BanInfo]:
        if project is not None:
            await store.get_project(project)
        return await store.list_bans(project)

    output([_row(b) for b in run_with_store(data_dir, database_url, config_file, action)], as_json)


@app.command("remove")
def remove(
    ban_id: Annotated[str, typer.Argument(help="the ban id (ban_…)", show_default=False)],
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    config_file: ConfigFile = None,
    as_json: JsonFlag = False,
) -> None:
    """Lift a ban."""
    ban = run_with_store(data_dir, database_url, config_file, lambda s: s.remove_ban(ban_id, ACTOR))
    output({"removed": ban.id, "project_id": ban.project_id}, as_json)
