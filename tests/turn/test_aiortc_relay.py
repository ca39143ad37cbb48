"""Two aiortc peers connect relay-only through our TURN server (aioice's TURN client, not ours),
over UDP and over TCP, and exchange data-channel messages. Only 127.0.0.1 is ever contacted:
the peers are given our server as their only ICE server."""

from __future__ import annotations

import asyncio

import pytest
from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
)
from aiortc.rtcconfiguration import RTCIceTransportPolicy

from pulsebeam.turn.credentials import IceServerProvider
from pulsebeam.turn.server import TurnServer
from tests.turn.conftest import KID, PROJECT, SECRET

pytestmark = pytest.mark.slow


def _configuration(server: TurnServer, transport: str) -> RTCConfiguration:
    assert server.udp_address is not None
    provider = IceServerProvider(SECRET, host="127.0.0.1", port=server.udp_address[1])
    _, turn = provider.ice_servers(KID, PROJECT, 2_000_000_000)
    url = next(u for u in turn.urls if u.endswith(f"transport={transport}"))
    return RTCConfiguration(
        iceServers=[RTCIceServer(urls=[url], username=turn.username, credential=turn.credential)],
        iceTransportPolicy=RTCIceTransportPolicy.RELAY,
    )


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_aiortc_peers_connect_relay_only(turn: TurnServer, transport: str) -> None:
    caller = RTCPeerConnection(_configuration(turn, transport))
    callee = RTCPeerConnection(_configuration(turn, transport))
    received: asyncio.Queue[str] = asyncio.Queue()
    try:
        channel = caller.createDataChannel("chat")
        opened = asyncio.Event()
        channel.on("open", opened.set)

        @callee.on("datachannel")
        def on_datachannel(remote: RTCDataChannel) -> None:
            @remote.on("message")
            def on_message(message: str) -> None:
                received.put_nowait(message)
                remote.send(f"echo {message}")

        @channel.on("message")
        def on_echo(message: str) -> None:
            received.put_nowait(message)

        await caller.setLocalDescription(await caller.createOffer())
        offer = caller.localDescription
        assert "typ relay" in offer.sdp
        assert "typ host" not in offer.sdp
        await callee.setRemoteDescription(offer)
        await callee.setLocalDescription(await callee.createAnswer())
        await caller.setRemoteDescription(callee.localDescription)
        await asyncio.wait_for(opened.wait(), 20)

        channel.send("hello through the relay")
        assert await asyncio.wait_for(received.get(), 10) == "hello through the relay"
        assert await asyncio.wait_for(received.get(), 10) == "echo hello through the relay"
        # Both peers relay through us: two allocations, traffic counted for the project.
        assert len(turn.manager.allocations) == 2
        assert {a[0] for a in turn.manager.allocations} == {transport}
        (usage,) = turn.drain_usage()
        assert usage.project_id == PROJECT
        assert usage.turn_packets > 0
    finally:
        await caller.close()
        await callee.close()
