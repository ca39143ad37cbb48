"""``pulsebeam account create|list``: accounts on the data dir or database directly."""

import sys
from typing import Annotated

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
from pulsebeam.errors import InvalidArgumentError

app = typer.Typer(help="Accounts (one per person).", no_args_is_help=True)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise InvalidArgumentError("--password-stdin: no password on standard input")
        return password
    if not sys.stdin.isatty():
        raise InvalidArgumentError("no terminal to ask for a password: use --password-stdin")
    return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))


@app.command("create")
def create(
    email: Annotated[str, typer.Option(help="sign-in email address", show_default=False)],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="read the password from stdin's first line")
    ] = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    config_file: ConfigFile = None,
    as_json: JsonFlag = False,
) -> None:
    """Create an account (the first one may also be made in the console's setup page)."""
    password = _read_password(password_stdin)
    account = run_with_store(
        data_dir,
        database_url,
        config_file,
        lambda store: store.create_account(email, password, ACTOR),
    )
    output({"id": account.id, "email": account.email, "created_at": account.created_at}, as_json)


@app.command("list")
def list_accounts(
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    config_file: ConfigFile = None,
    as_json: JsonFlag = False,
) -> None:
    """List accounts, oldest first."""
    accounts = run_with_store(data_dir, database_url, config_file, lambda s: s.list_accounts())
    output([{"id": a.id, "email": a.email, "created_at": a.created_at} for a in accounts], as_json)
