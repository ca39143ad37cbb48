"""``pulsebeam token create|inspect``: the server SDK from the command line."""

import json
import sys
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from pulsebeam.auth import AccessToken, PeerClaims, PeerPolicy, decode_unverified

app = typer.Typer(help="Mint and inspect peer tokens.", no_args_is_help=True)
FROM_STDIN = "-"


@app.command("create")
def create(
    api_key: Annotated[
        str, typer.Option(envvar="PULSEBEAM_API_KEY", help="key id (kid_…)", show_default=False)
    ],
    api_secret: Annotated[
        str,
        typer.Option(envvar="PULSEBEAM_API_SECRET", help="API secret (sk_…)", show_default=False),
    ],
    group_id: Annotated[str, typer.Option(help="the peer's group (room)")],
    peer_id: Annotated[str, typer.Option(help="the peer's id")],
    duration: Annotated[int, typer.Option(min=1, help="time to live in seconds")] = 3600,
    allow_policy: Annotated[
        str, typer.Option(help="whom the peer may reach, GROUP_PATTERN:PEER_PATTERN")
    ] = "*:*",
) -> None:
    """Mint a token for one peer and print it."""
    claims = PeerClaims(group_id, peer_id)
    claims.set_allow_policy(PeerPolicy.parse(allow_policy))
    typer.echo(AccessToken(api_key, api_secret).create_token(claims, duration))


def describe_expiry(exp: Any, now: float) -> str:
    if isinstance(exp, bool) or not isinstance(exp, int):
        return "no valid 'exp' claim"
    when = datetime.fromtimestamp(exp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    delta = exp - now
    if delta >= 0:
        return f"expires in {_span(delta)} ({when})"
    return f"expired {_span(-delta)} ago ({when})"


def _span(seconds: float) -> str:
    s = int(seconds)
    if s < 120:
        return f"{s} s"
    if s < 2 * 3600:
        return f"{s // 60} min"
    if s < 2 * 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} days"


@app.command("inspect")
def inspect(
    token: Annotated[str, typer.Argument(help="the token, or - to read it from stdin")],
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Decode a token and show its header, claims and expiry. The signature is NOT checked."""
    if token == FROM_STDIN:
        token = sys.stdin.read().strip()
    parts = decode_unverified(token)
    expiry = describe_expiry(parts.payload.get("exp"), time.time())
    if as_json:
        typer.echo(json.dumps({"header": parts.header, "claims": parts.payload, "expiry": expiry}))
        return
    typer.echo(f"header: {json.dumps(parts.header)}")
    typer.echo(f"claims: {json.dumps(parts.payload)}")
    typer.echo(f"expiry: {expiry}")
    typer.echo("signature: not verified (inspection only)")
