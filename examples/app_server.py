"""The customer's back end in PulseBeam's flow, with the demo page: sign in, get a peer token.

Your users never see your API secret. They sign in to *your* server, which mints a short-lived
token with the server SDK and a strict allow policy (the user reaches only peers of the room it
signed in to), and their peer SDK uses that token against PulseBeam::

    python examples/app_server.py --pulsebeam-url http://127.0.0.1:8080 \\
        --api-key kid_… --api-secret sk_… [--demo-password s3cret] [--port 8000]

    POST /api/login  {"name": "alice", "password": "…", "room": "lobby"}
                     -> {"token", "expires_at", "group_id", "peer_id"} + a session cookie
    POST /api/token  (the session cookie) -> a fresh token for the same user and room
    GET  /config.json, /  -> the demo page (src/pulsebeam/web/demo), which loads the browser SDK
                             from the PulseBeam server

The demo login accepts any name (with ``--demo-password``, only that password); sessions live in
memory. A real application checks its own users. The key can also come from
``PULSEBEAM_API_KEY`` / ``PULSEBEAM_API_SECRET``.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from pulsebeam import AccessToken, PeerClaims, PeerPolicy
from pulsebeam.auth import decode_unverified, validate_id
from pulsebeam.errors import InvalidArgumentError
from pulsebeam.web import demo_app

COOKIE = "demo_session"


@dataclass(frozen=True)
class Settings:
    pulsebeam_url: str
    api_key: str
    api_secret: str
    token_ttl: int = 300
    demo_password: str | None = None


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(settings: Settings) -> Starlette:
    """The app; a malformed API key or secret fails here, at start, not at the first sign-in."""
    minter = AccessToken(settings.api_key, settings.api_secret)
    sessions: dict[str, tuple[str, str]] = {}  # cookie -> (room, name)

    def issue(room: str, name: str) -> dict[str, object]:
        claims = PeerClaims(room, name)
        # Strict: this user reaches the peers of this room and nobody else.
        claims.set_allow_policy(PeerPolicy(room, "*"))
        token = minter.create_token(claims, settings.token_ttl)
        expires_at = decode_unverified(token).payload["exp"]
        return {"token": token, "expires_at": expires_at, "group_id": room, "peer_id": name}

    async def login(request: Request) -> JSONResponse:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return error(400, 'send JSON: {"name": …, "password": …, "room": …}')
        if not isinstance(body, dict):
            return error(400, 'send JSON: an object {"name": …, "password": …, "room": …}')
        try:
            name = validate_id(body.get("name"), "name")
            room = validate_id(body.get("room"), "room")
        except InvalidArgumentError as exc:
            return error(400, str(exc))
        password = body.get("password")
        expected = settings.demo_password
        if expected is not None and not (
            isinstance(password, str) and secrets.compare_digest(password, expected)
        ):
            return error(401, "wrong name or password")
        session = secrets.token_urlsafe(24)
        sessions[session] = (room, name)
        response = JSONResponse(issue(room, name))
        response.set_cookie(COOKIE, session, httponly=True, samesite="strict")
        return response

    async def token(request: Request) -> JSONResponse:
        user = sessions.get(request.cookies.get(COOKIE, ""))
        if user is None:
            return error(401, "sign in first (POST /api/login)")
        return JSONResponse(issue(*user))

    async def config(request: Request) -> JSONResponse:
        return JSONResponse({"pulsebeam_url": settings.pulsebeam_url.rstrip("/")})

    return Starlette(
        routes=[
            Route("/api/login", login, methods=["POST"]),
            Route("/api/token", token, methods=["POST"]),
            Route("/config.json", config, methods=["GET"]),
            Mount("/", demo_app()),
        ]
    )


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pulsebeam-url", default="http://127.0.0.1:8080")
    parser.add_argument("--api-key", default=os.environ.get("PULSEBEAM_API_KEY"))
    parser.add_argument("--api-secret", default=os.environ.get("PULSEBEAM_API_SECRET"))
    parser.add_argument("--token-ttl", type=int, default=300, help="token lifetime, seconds")
    parser.add_argument("--demo-password", help="the one password the demo login accepts")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    if not args.api_key or not args.api_secret:
        parser.error("give --api-key and --api-secret (or PULSEBEAM_API_KEY/PULSEBEAM_API_SECRET)")
    settings = Settings(
        args.pulsebeam_url, args.api_key, args.api_secret, args.token_ttl, args.demo_password
    )
    uvicorn.run(create_app(settings), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
