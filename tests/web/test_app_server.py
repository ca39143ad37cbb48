"""``examples/app_server.py``: the demo login mints short-lived tokens with a strict policy, the
session cookie refreshes them, and bad input gets a clear error."""

from __future__ import annotations

import time

import httpx
import pytest

from examples.app_server import Settings, create_app
from pulsebeam import KeyPair, PeerPolicy
from pulsebeam.auth import TokenVerifier, parse_public_key
from pulsebeam.errors import InvalidArgumentError

KEYS = KeyPair.generate()
VERIFIER = TokenVerifier(
    lambda kid: parse_public_key(KEYS.public_key) if kid == KEYS.api_key else None
)


def client(demo_password: str | None = None) -> httpx.AsyncClient:
    settings = Settings(
        "http://127.0.0.1:9/",
        KEYS.api_key,
        KEYS.api_secret,
        token_ttl=120,
        demo_password=demo_password,
    )
    transport = httpx.ASGITransport(app=create_app(settings))
    return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000")


async def test_login_mints_a_short_lived_token_for_the_room_only() -> None:
    async with client() as app:
        reply = await app.post(
            "/api/login", json={"name": "alice", "password": "", "room": "lobby"}
        )
    assert reply.status_code == 200
    body = reply.json()
    verified = VERIFIER.verify(body["token"])
    assert (verified.group_id, verified.peer_id) == ("lobby", "alice")
    assert verified.policy == PeerPolicy("lobby", "*")
    assert verified.policy.allows("lobby", "bob")
    assert not verified.policy.allows("other", "bob")
    assert 115 <= verified.expires_at - time.time() <= 121
    assert body["expires_at"] == verified.expires_at
    assert (body["group_id"], body["peer_id"]) == ("lobby", "alice")


async def test_the_session_cookie_refreshes_the_token() -> None:
    async with client() as app:
        assert (await app.post("/api/token")).status_code == 401
        await app.post("/api/login", json={"name": "bob", "room": "r1"})
        reply = await app.post("/api/token")
    assert reply.status_code == 200
    verified = VERIFIER.verify(reply.json()["token"])
    assert (verified.group_id, verified.peer_id) == ("r1", "bob")


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"name": "a b", "room": "r1"}, 400, "name 'a b' is invalid"),
        ({"name": "alice", "room": ""}, 400, "room '' is invalid"),
        ({"name": "x" * 37, "room": "r1"}, 400, "name"),
        (["not", "an", "object"], 400, "send JSON"),
    ],
)
async def test_bad_sign_in_input_is_refused_clearly(
    body: object, status: int, message: str
) -> None:
    async with client() as app:
        reply = await app.post("/api/login", json=body)
        assert reply.status_code == status
        assert message in reply.json()["error"]
        assert "demo_session" not in reply.cookies
        assert (await app.post("/api/token")).status_code == 401


async def test_a_demo_password_is_checked() -> None:
    async with client(demo_password="s3cret") as app:
        wrong = await app.post("/api/login", json={"name": "a", "password": "nope", "room": "r"})
        right = await app.post("/api/login", json={"name": "a", "password": "s3cret", "room": "r"})
    assert wrong.status_code == 401
    assert wrong.json() == {"error": "wrong name or password"}
    assert right.status_code == 200


async def test_not_json_is_refused() -> None:
    async with client() as app:
        reply = await app.post("/api/login", content=b"name=alice")
    assert reply.status_code == 400
    assert "send JSON" in reply.json()["error"]


async def test_config_and_demo_page_are_served() -> None:
    async with client() as app:
        assert (await app.get("/config.json")).json() == {"pulsebeam_url": "http://127.0.0.1:9"}
        page = await app.get("/")
        script = await app.get("/demo.js")
    assert page.status_code == 200
    assert "<title>PulseBeam demo</title>" in page.text
    assert script.status_code == 200
    assert "createPeer" in script.text


def test_a_bad_api_secret_fails_at_start() -> None:
    with pytest.raises(InvalidArgumentError, match="API secret is invalid"):
        create_app(Settings("http://127.0.0.1:9", KEYS.api_key, "sk_nothex"))
