"""Two aiortc peers connect relay-only through our TURN server (aioice's TURN client, not ours),
over UDP and over TCP, and exchange data-channel messages, also after their TURN credential
expired. Only 127.0.0.1 is ever contacted: the peers are given our server as their only ICE
server."""

from __future__ import annotations

import asyncio
import time

import aioice.stun
import pytest
from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
)
from aiortc.rtcconfiguration import RTCIceTransportPolicy

import pulsebeam.peer.aiortc_compat  # noqa: F401 - its aioice fixes, as importing the SDK does
from pulsebeam.turn.credentials import IceServerProvider
from pulsebeam.turn.server import TurnServer
from tests.turn.conftest import KID, PROJECT, SECRET, ServerFactory

pytestmark = pytest.mark.slow


def _configuration(
    server: TurnServer, transport: str, expires_at: int = 2_000_000_000
) -> RTCConfiguration:
    assert server.udp_address is not None
    provider = IceServerProvider(SECRET, host="127.0.0.1", port=server.udp_address[1])
    _, turn = provider.ice_servers(KID, PROJECT, expires_at)
    url = next(u for u in turn.urls if u.endswith(f"transport={transport}"))
    return RTCConfiguration(
        iceServers=[RTCIceServer(urls=[url], username=turn.username, credential=turn.credential)],
        iceTransportPolicy=RTCIceTransportPolicy.RELAY,
    )


async def _open_channel(
    caller: RTCPeerConnection, callee: RTCPeerConnection, hold_answer: float = 0.0
) -> tuple[RTCDataChannel, asyncio.Queue[str]]:
    """Connect the two peers and open a data channel on which the callee echoes messages; the
    queue gets what the callee receives and the echoes the caller receives. ``hold_answer``:
    seconds for which the callee checks alone before the caller takes its answer."""
    received: asyncio.Queue[str] = asyncio.Queue()
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
    if hold_answer:
        await asyncio.sleep(hold_answer)
        assert callee.iceConnectionState == "checking"
    await caller.setRemoteDescription(callee.localDescription)
    await asyncio.wait_for(opened.wait(), 20)
    return channel, received


async def _echo(channel: RTCDataChannel, received: asyncio.Queue[str], text: str) -> None:
    channel.send(text)
    assert await asyncio.wait_for(received.get(), 10) == text
    assert await asyncio.wait_for(received.get(), 10) == f"echo {text}"


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_aiortc_peers_connect_relay_only(turn: TurnServer, transport: str) -> None:
    caller = RTCPeerConnection(_configuration(turn, transport))
    callee = RTCPeerConnection(_configuration(turn, transport))
    try:
        channel, received = await _open_channel(caller, callee)
        await _echo(channel, received, "hello through the relay")
        # Both peers relay through us: two allocations, traffic counted for the project.
        assert len(turn.manager.allocations) == 2
        assert {a[0] for a in turn.manager.allocations} == {transport}
        (usage,) = turn.drain_usage()
        assert usage.project_id == PROJECT
        assert usage.turn_packets > 0
    finally:
        await caller.close()
        await callee.close()


async def test_aiortc_session_outlives_its_turn_credential(make_server: ServerFactory) -> None:
    """aioice keeps the credential it allocated with; with allocations granted only 3 s it
    refreshes every 2.5 s, so the session below survives only if Refreshes on the expired
    credential are accepted (and aioice would close its relay on a refused one)."""
    server = await make_server(max_lifetime_secs=3)
    expires_at = int(time.time()) + 2  # 1 to 2 s from now
    caller = RTCPeerConnection(_configuration(server, "udp", expires_at))
    callee = RTCPeerConnection(_configuration(server, "udp", expires_at))
    try:
        channel, received = await _open_channel(caller, callee)
        await _echo(channel, received, "before expiry")
        allocations = list(server.manager.allocations.values())
        assert len(allocations) == 2
        # Two refresh rounds of aioice, both after the credential expired.
        oldest = min(a.created_at for a in allocations)
        await asyncio.sleep(max(0.0, oldest + 5.6 - time.monotonic()))
        assert time.time() > expires_at
        await _echo(channel, received, "after expiry")
        assert list(server.manager.allocations.values()) == allocations
        for allocation in allocations:
            assert allocation.expires_at > allocation.created_at + 5  # refreshed past 3 s
    finally:
        await caller.close()
        await callee.close()


async def test_a_check_lost_for_want_of_a_permission_is_sent_again_at_once(
    turn: TurnServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The callee starts its checks first; the caller's allocation has no permission for them
    yet and drops them. The peer SDK's aioice fix (pulsebeam.peer.aiortc_compat) makes the
    caller's own check, when it arrives, send the callee's check again at once; with
    retransmissions pushed out of reach (30 s), the pair connects only through that."""
    monkeypatch.setattr(aioice.stun, "RETRY_RTO", 30.0)
    caller = RTCPeerConnection(_configuration(turn, "udp"))
    callee = RTCPeerConnection(_configuration(turn, "udp"))
    try:
        channel, received = await _open_channel(caller, callee, hold_answer=0.3)
        await _echo(channel, received, "after a lost first check")
    finally:
        await caller.close()
        await callee.close()
