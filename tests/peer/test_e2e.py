"""End to end: the SDK in this process, a remote peer in another, the real server between.

Host candidates are restricted to 127.0.0.1 (see conftest), so nothing leaves loopback.
"""

from __future__ import annotations

import asyncio

import pytest
from aiortc import RTCConfiguration
from av import VideoFrame

from pulsebeam.errors import PermissionDeniedError, TokenError
from pulsebeam.peer import Peer, PeerState, Session, create_peer
from tests.fixtures.server import ProjectKeys, RunningServer
from tests.peer.remote import Agent

pytestmark = pytest.mark.slow

TIMEOUT = 20.0


async def echo_round(session: Session, label: str, count: int) -> list[str]:
    channel = session.create_data_channel(label)
    await channel.wait_open()
    for i in range(count):
        channel.send(str(i))
    return [str(await channel.receive()) for _ in range(count)]


async def test_thousand_messages_relay_only_through_our_turn(
    server: RunningServer, keys: ProjectKeys, agents: list[Agent], peers: list[Peer]
) -> None:
    agents.append(await Agent.start(server.grpc, keys, "bob", "--force-relay"))
    alice = await create_peer(keys.token("g1", "alice"), server.grpc, force_relay=True)
    peers.append(alice)
    # The only ICE servers are the ones Prepare handed out: our TURN on loopback.
    urls = [url for s in alice.configuration.iceServers or [] for url in s.urls]
    assert urls
    assert all(url.split("?")[0].startswith(("turn:127.0.0.1:", "stun:127.0.0.1:")) for url in urls)
    async with asyncio.timeout(TIMEOUT):
        session = await alice.connect("g1", "bob")
        echoed = await echo_round(session, "bulk", 1000)
    assert echoed == [str(i) for i in range(1000)]  # all of them, in order, both ways
    assert session.path == "relay"


async def test_callee_that_arrives_late_is_waited_for(
    server: RunningServer,
    keys: ProjectKeys,
    loopback_ice: RTCConfiguration,
    agents: list[Agent],
    peers: list[Peer],
) -> None:
    alice = await create_peer(keys.token("g1", "alice"), server.grpc)
    peers.append(alice)
    async with asyncio.timeout(TIMEOUT):
        connecting = asyncio.create_task(alice.connect("g1", "late"))
        await asyncio.sleep(1.5)  # the official SDK would have failed with NOT_FOUND by now
        assert not connecting.done()
        agents.append(await Agent.start(server.grpc, keys, "late"))
        session = await connecting
        await session.wait_connected()
        assert await echo_round(session, "chat", 20) == [str(i) for i in range(20)]


async def test_connect_gives_up_with_the_reason(
    server: RunningServer, keys: ProjectKeys, peers: list[Peer]
) -> None:
    alice = await create_peer(keys.token("g1", "alice"), server.grpc)
    peers.append(alice)
    with pytest.raises(TimeoutError, match=r"g1/nobody within 2 s .*no open Recv stream"):
        await alice.connect("g1", "nobody", give_up_after=2)


async def test_policy_refusals_raise_permission_denied(
    server: RunningServer,
    keys: ProjectKeys,
    loopback_ice: RTCConfiguration,
    agents: list[Agent],
    peers: list[Peer],
) -> None:
    grpc = server.grpc
    agents.append(await Agent.start(grpc, keys, "carol"))
    agents.append(await Agent.start(grpc, keys, "dave", "--policy", "g1:bob"))
    strict = await create_peer(keys.token("g1", "alice", policy="g1:bob"), grpc)
    open_minded = await create_peer(keys.token("g1", "erin"), grpc)
    peers += [strict, open_minded]
    async with asyncio.timeout(TIMEOUT):
        with pytest.raises(PermissionDeniedError, match="does not reach g1/carol"):
            await strict.connect("g1", "carol")
        # dave's own policy hides him from erin: the server answers as if he were not there
        # (NOT_FOUND, docs/signaling.md rule 4), so connect waits, then gives up.
        with pytest.raises(TimeoutError, match=r"g1/dave within 2 s .*no open Recv stream"):
            await open_minded.connect("g1", "dave", give_up_after=2)
    assert strict.state is PeerState.CONNECTED  # a refusal ends the call, not the peer


async def test_a_bad_token_is_refused_by_prepare(server: RunningServer) -> None:
    from pulsebeam.auth import AccessToken, KeyPair, PeerClaims, PeerPolicy

    pair = KeyPair.generate()  # a key the server never heard of
    claims = PeerClaims("g1", "alice")
    claims.set_allow_policy(PeerPolicy("*", "*"))
    token = AccessToken(pair.api_key, pair.api_secret).create_token(claims, 60)
    with pytest.raises(TokenError, match=r"Prepare: .*"):
        await create_peer(token, server.grpc)


async def test_media_track_arrives(
    server: RunningServer,
    keys: ProjectKeys,
    loopback_ice: RTCConfiguration,
    agents: list[Agent],
    peers: list[Peer],
) -> None:
    grpc = server.grpc
    agents.append(await Agent.start(grpc, keys, "camera", "--send-video"))
    alice = await create_peer(keys.token("g1", "alice"), grpc)
    peers.append(alice)
    async with asyncio.timeout(TIMEOUT):
        session = await alice.connect("g1", "camera")
        track = await session.tracks().get()
        assert track.kind == "video"
        frame = await track.recv()
        assert isinstance(frame, VideoFrame)
        assert (frame.width, frame.height) == (640, 480)


async def test_deleting_the_key_ends_signaling(
    server: RunningServer,
    keys: ProjectKeys,
    loopback_ice: RTCConfiguration,
    agents: list[Agent],
    peers: list[Peer],
) -> None:
    bob = await Agent.start(server.grpc, keys, "bob")
    agents.append(bob)
    alice = await create_peer(keys.token("g1", "alice"), server.grpc)
    peers.append(alice)
    async with asyncio.timeout(TIMEOUT):
        session = await alice.connect("g1", "bob")
        await session.wait_connected()
        with keys.rest(server) as rest:
            response = rest.delete(f"/projects/{keys.project_id}/keys/{keys.api_key}")
            assert response.status_code in (200, 204), response.text
        error = await alice.wait_closed()
        assert isinstance(error, TokenError)
        assert "was deleted" in str(error)
        assert session.closed
        assert (session.close_reason or "").startswith("signaling ended")
        closed = await bob.expect("peer_closed")
    assert closed["error"] == "TokenError"
    assert alice.state is PeerState.CLOSED
    with pytest.raises(TokenError):
        await alice.connect("g1", "bob")
