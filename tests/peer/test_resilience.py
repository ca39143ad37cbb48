"""Sessions outlive what kills the official SDK's: a server restart and a token's expiry.

The remote peer runs in its own process; host candidates are 127.0.0.1 only, so the media
path does not depend on the server's TURN and only signaling is interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from aiortc import RTCConfiguration
from aiortc.mediastreams import VideoStreamTrack

from pulsebeam.peer import Peer, PeerState, Session, create_peer
from tests.fixtures.server import ProjectKeys, RunningServer, create_project, start_server
from tests.peer.remote import Agent

pytestmark = pytest.mark.slow

TIMEOUT = 30.0


async def echo_round(session: Session, label: str, count: int = 10) -> None:
    channel = session.create_data_channel(label)
    await channel.wait_open()
    for i in range(count):
        channel.send(f"{label}-{i}")
    assert [await channel.receive() for _ in range(count)] == [f"{label}-{i}" for i in range(count)]


async def wait_for_state(peer: Peer, state: PeerState) -> None:
    while peer.state is not state:  # noqa: ASYNC110 - the state has no event of its own
        await asyncio.sleep(0.05)


async def test_server_restart_is_survived(
    tmp_path: Path, loopback_ice: RTCConfiguration, agents: list[Agent], peers: list[Peer]
) -> None:
    # No TURN here: a restart would take the allocations with it; this test is about signaling.
    with contextlib.ExitStack() as stack:
        first = stack.enter_context(start_server(tmp_path))
        port = urlsplit(first.url).port
        keys: ProjectKeys = await asyncio.to_thread(create_project, first)
        bob = await Agent.start(first.grpc, keys, "bob")
        agents.append(bob)
        alice = await create_peer(keys.token("g1", "alice"), first.grpc)
        peers.append(alice)
        async with asyncio.timeout(TIMEOUT):
            session = await alice.connect("g1", "bob")
            await echo_round(session, "before")

            assert await asyncio.to_thread(first.stop) == 0
            await wait_for_state(alice, PeerState.RECONNECTING)
            await echo_round(session, "while-down")  # the media path does not need the server

            second: RunningServer = await asyncio.to_thread(
                stack.enter_context,
                start_server(tmp_path, "--http", f"127.0.0.1:{port}"),
            )
            assert second.url == first.url
            await alice.wait_ready()
            # Signaling works again: a renegotiation (a new track) reaches bob, and a peer that
            # arrives after the restart is reached too.
            session.add_track(VideoStreamTrack())
            assert (await bob.expect("track"))["kind"] == "video"
            agents.append(await Agent.start(second.grpc, keys, "carol"))
            late = await alice.connect("g1", "carol")
            await echo_round(late, "after")
        assert not session.closed
        assert alice.error is None


async def test_refreshed_token_keeps_the_session(
    server: RunningServer, keys: ProjectKeys, agents: list[Agent], peers: list[Peer]
) -> None:
    # Relay-only: the TURN credential from Prepare expires with each token as well.
    ttl = 3
    bob = await Agent.start(
        server.grpc, keys, "bob", "--ttl", str(ttl), "--refresh", "--force-relay"
    )
    agents.append(bob)
    minted: list[str] = []

    async def provider() -> str:
        minted.append(keys.token("g1", "alice", ttl=ttl))
        return minted[-1]

    alice = await create_peer(
        keys.token("g1", "alice", ttl=ttl), server.grpc, force_relay=True, token_provider=provider
    )
    peers.append(alice)
    async with asyncio.timeout(TIMEOUT):
        session = await alice.connect("g1", "bob")
        await echo_round(session, "fresh")
        await asyncio.sleep(2.5 * ttl)  # two expiries of alice's first token, and of bob's
        assert len(minted) >= 2
        assert alice.state is PeerState.CONNECTED
        session.add_track(VideoStreamTrack())  # signaling with the refreshed tokens
        assert (await bob.expect("track"))["kind"] == "video"
        await echo_round(session, "refreshed")
        # A session made now allocates on TURN with the credential of a refreshed token.
        agents.append(await Agent.start(server.grpc, keys, "carol", "--force-relay"))
        later = await alice.connect("g1", "carol")
        await echo_round(later, "later")
    assert session.path == later.path == "relay"
    assert not session.closed
    assert alice.error is None
    # The server really ended the old streams at expiry; the peers reopened them.
    expired = re.findall(
        rf"stream closed g1/alice/{alice.info.conn_id}: UNAUTHENTICATED", server.log()
    )
    assert len(expired) >= 2
