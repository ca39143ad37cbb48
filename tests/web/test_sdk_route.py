"""The SDK's static route: ``/sdk/pulsebeam-peer.js`` as a module any origin may import, and
nothing else under ``/sdk/``."""

from __future__ import annotations

import httpx
from starlette.applications import Starlette

from pulsebeam.web import SDK_PATH, sdk_mount
from tests.fixtures.server import RunningServer


async def test_the_sdk_is_served_as_a_cross_origin_module() -> None:
    transport = httpx.ASGITransport(app=Starlette(routes=[sdk_mount()]))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8080") as app:
        reply = await app.get("/sdk/pulsebeam-peer.js", headers={"origin": "http://127.0.0.1:8000"})
        head = await app.head("/sdk/pulsebeam-peer.js")
        others = [
            await app.get("/sdk/__init__.py"),
            await app.get("/sdk/"),
            await app.get("/sdk/demo/index.html"),
        ]
        post = await app.post("/sdk/pulsebeam-peer.js")
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "text/javascript; charset=utf-8"
    assert reply.headers["access-control-allow-origin"] == "*"
    assert reply.headers["cache-control"] == "no-cache"
    assert "etag" in reply.headers
    assert reply.content == SDK_PATH.read_bytes()
    assert "export async function createPeer" in reply.text
    assert head.status_code == 200
    assert head.content == b""
    assert [r.status_code for r in others] == [404, 404, 404]
    assert post.status_code == 405


def test_the_sdk_has_the_official_api_names() -> None:
    source = SDK_PATH.read_text(encoding="utf-8")
    for name in ("createPeer", "class Peer", "class Session", "PulseBeamError"):
        assert name in source
    for member in (
        "start()",
        "connect(groupId, peerId, abortSignal)",
        "close()",
        "get state()",
        "get peerId()",
        "onsession",
        "onstatechange",
        "addTrack(",
        "removeTrack(",
        "createDataChannel(",
        "getStats(",
        "get connectionState()",
        "ontrack",
        "ondatachannel",
        "onconnectionstatechange",
        "updateToken(",
    ):
        assert member in source, member
    # One file, no build step: it imports nothing.
    assert not any(line.startswith("import ") for line in source.splitlines())


def test_our_server_serves_the_sdk(web_server: RunningServer) -> None:
    reply = httpx.get(f"{web_server.url}/sdk/pulsebeam-peer.js", timeout=10)
    assert reply.status_code == 200
    assert reply.content == SDK_PATH.read_bytes()
    assert reply.headers["access-control-allow-origin"] == "*"
