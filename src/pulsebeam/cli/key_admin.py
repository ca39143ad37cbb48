"""``pulsebeam key create|list|delete``: a project's keys on the data dir or database directly
(merged into the ``key`` group beside ``key generate``). See :mod:`pulsebeam.cli.admin` for how
a running server learns of deletions made here."""

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pulsebeam.auth.keys import validate_key_id
from pulsebeam.cli.admin import (
    ACTOR,
    ConfigFile,
    DatabaseUrl,
    DataDir,
    JsonFlag,
    output,
    run_with_store,
)
from pulsebeam.control.views import KeyDetails

if TYPE_CHECKING:
    from pulsebeam.control.store import Store

app = typer.Typer()

ProjectOpt = Annotated[
    str, typer.Option("--project", help="project id (prj_…)", show_default=False)
]


@app.command("create")
def create(
    project: ProjectOpt,
    label: Annotated[str, typer.Option(help="a name to recognise the key by")] = "",
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    config_file: ConfigFile = None,
    as_json: JsonFlag = False,
) -> None:
    """Create a key for a project; its secret is shown only now and never stored."""
    created = run_with_store(
        data_dir, database_url, config_file, lambda s: s.create_key(project, label, ACTOR)
    )
    output(
        {
            "api_key": created.key.kid,
            "api_secret": created.api_secret,
            "public_key": created.key.public_key,
            "project_id": created.key.project_id,
            "label": created.key.label,
        },
        as_json,
    )
    if not as_json:
        typer.echo("Keep api_secret private: it is shown only now.")


@app.command("list")
def list_keys(
    project: ProjectOpt,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    config_file: ConfigFile = None,
    as_json: JsonFlag = False,
) -> None:
    """List a project's keys (never their secrets); old keys say needs_rotation."""

    async def action(store: "Store") -> list[KeyDetails]:
        await store.get_project(project)  # an unknown project is an error, not an empty list
        return await store.list_project_keys(project)

    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = [
        {
            "api_key": k.key.kid,
            "label": k.key.label,
            "created_at": k.key.created_at,
            "last_used_at": k.last_used_at,
            "needs_rotation": k.needs_rotation(now),
            "public_key": k.key.public_key,
        }
        for k in run_with_store(data_dir, database_url, config_file, action)
    ]
    output(rows, as_json)


@app.command("delete")
def delete(
    kid: Annotated[str, typer.Argument(help="the key id (kid_…)", show_default=False)],
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    config_file: ConfigFile = None,
    as_json: JsonFlag = False,
) -> None:
    """Delete a key: tokens minted with it stop working."""
    validate_key_id(kid)
    key = run_with_store(data_dir, database_url, config_file, lambda s: s.delete_key(kid, ACTOR))
    output({"deleted": key.kid, "project_id": key.project_id}, as_json)
