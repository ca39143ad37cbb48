"""``pulsebeam project create|list|add-member``: projects and shared ownership, offline."""

from typing import TYPE_CHECKING, Annotated

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
from pulsebeam.control.views import MemberInfo, ProjectInfo, Role

if TYPE_CHECKING:
    from pulsebeam.control.store import Store
from pulsebeam.errors import NotFoundError

app = typer.Typer(help="Projects and their members.", no_args_is_help=True)

ProjectOpt = Annotated[
    str, typer.Option("--project", help="project id (prj_…)", show_default=False)
]


@app.command("create")
def create(
    name: Annotated[str, typer.Option(help="project name", show_default=False)],
    owner: Annotated[str, typer.Option(help="email of the owning account", show_default=False)],
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    config_file: ConfigFile = None,
    as_json: JsonFlag = False,
) -> None:
    """Create a project owned by an existing account."""

    async def action(store: "Store") -> ProjectInfo:
        account = await store.find_account(owner)
        if account is None:
            raise NotFoundError(f"no account with email {owner}: create it first")
        return await store.create_project(name, account.id, ACTOR)

    project = run_with_store(data_dir, database_url, config_file, action)
    output({"id": project.id, "name": project.name, "created_at": project.created_at}, as_json)


@app.command("list")
def list_projects(
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    config_file: ConfigFile = None,
    as_json: JsonFlag = False,
) -> None:
    """List every project, oldest first."""
    projects = run_with_store(data_dir, database_url, config_file, lambda s: s.list_projects())
    output([{"id": p.id, "name": p.name, "created_at": p.created_at} for p in projects], as_json)


@app.command("add-member")
def add_member(
    project: ProjectOpt,
    email: Annotated[str, typer.Option(help="email of an existing account", show_default=False)],
    role: Annotated[Role, typer.Option(help="owner or member")] = Role.MEMBER,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    config_file: ConfigFile = None,
    as_json: JsonFlag = False,
) -> None:
    """Share a project with another account."""

    async def action(store: "Store") -> MemberInfo:
        return await store.add_member(project, email, role.value, ACTOR)

    member = run_with_store(data_dir, database_url, config_file, action)
    output(
        {
            "project_id": project,
            "account_id": member.account_id,
            "email": member.email,
            "role": member.role.value,
        },
        as_json,
    )
