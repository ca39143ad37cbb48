"""``pulsebeam key generate``: offline key pairs in the official formats."""

import json
from typing import Annotated

import typer

from pulsebeam.auth import KeyPair

app = typer.Typer(help="API key pairs.", no_args_is_help=True)


@app.command("generate")
def generate(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Generate a key pair offline (register its public key with a server to use it)."""
    pair = KeyPair.generate()
    fields = {"api_key": pair.api_key, "api_secret": pair.api_secret, "public_key": pair.public_key}
    if as_json:
        typer.echo(json.dumps(fields))
    else:
        for name, value in fields.items():
            typer.echo(f"{name}: {value}")
        typer.echo("Keep api_secret private: it is shown only now.")
