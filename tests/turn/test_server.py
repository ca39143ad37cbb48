"""Our TURN server end to end on 127.0.0.1: Binding, Allocate, permissions, channels, relaying
over UDP, TCP and TLS, refresh and cleanup, usage and metrics."""

from __future__ import annotations

import asyncio
import os
import ssl
import time

import pytest

from pulsebeam.config import HostPort
from pulsebeam.turn.attributes import decode_u32, decode_unknown_attributes, decode_xor_address
from pulsebeam.turn.channeldata import parse_channel_data
from pulsebeam.turn.client import StunError, TurnClient
from pulsebeam.turn.server import TurnServer
from pulsebeam.turn.stun import (
    Attr,
    Message,
    MessageClass,
    Method,
    long_term_key,
    parse_message,
)
from tests.turn.conftest import PROJECT, ServerFactory, credential

Peer = tuple[tuple[str, int], object]


def _address(server: TurnServer, kind: str) -> tuple[str, int]:
    address = {"udp": server.udp_address, "tcp": server.tcp_address, "tls": server.tls_address}
    found = address[kind]
    assert found is not None
    return found


@pytest.mark.parametrize("kind", ["udp", "tcp"])
async def test_binding_returns_the_source_address(turn: TurnServer, kind: str) -> None:
    client = await TurnClient.connect(kind, _address(turn, kind))
    try:
        request = Message(Method.BINDING, MessageClass.REQUEST, os.urandom(12))
        answer = await client.transact(request, sign=False)
        value = answer.get(Attr.XOR_MAPPED_ADDRESS)
        assert value is not None
        local = client.transport.get_extra_info("sockname")[:2]
        assert decode_xor_address(value, answer.transaction_id) == tuple(local)
    finally:
        client.close()


async def test_udp_and_tcp_share_the_port(turn: TurnServer) -> None:
    assert turn.udp_address is not None
    assert turn.tcp_address is not None
    assert turn.udp_address[1] == turn.tcp_address[1] != 0


@pytest.mark.parametrize("kind", ["udp", "tcp", "tls"])
async def test_relay_round_trip(
    make_server: ServerFactory,
    echo_peer: Peer,
    tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext],
    kind: str,
) -> None:
    server_ctx, client_ctx = tls_contexts
    server = await make_server(tls_context=server_ctx, tls_listen=HostPort("127.0.0.1", 0))
    peer, echo = echo_peer
    client = await TurnClient.connect(
        kind, _address(server, kind), client_ctx if kind == "tls" else None
    )
    try:
        cred = credential()
        answer = await client.allocate(cred.username, cred.password)
        relayed = client.relayed_address(answer)
        assert relayed[0] == "127.0.0.1"
        assert 40000 <= relayed[1] <= 49999
        assert decode_u32(answer.get(Attr.LIFETIME) or b"", "LIFETIME") == 600

        # Send indication -> peer; the echo comes back as a Data indication.
        await client.create_permission(peer)
        client.send_indication(peer, b"hello over send")
        data = parse_message(await client.receive())
        assert (data.method, data.message_class) == (Method.DATA, MessageClass.INDICATION)
        assert data.get(Attr.DATA) == b"hello over send"
        assert (
            decode_xor_address(data.get(Attr.XOR_PEER_ADDRESS) or b"", data.transaction_id) == peer
        )
        assert echo.received[-1] == (b"hello over send", relayed)  # type: ignore[attr-defined]

        # ChannelBind -> ChannelData both ways (odd length: padding on streams).
        await client.channel_bind(0x4001, peer)
        for size in (1, 5, 100, 1200):
            payload = os.urandom(size)
            client.send_channel(0x4001, payload)
            assert parse_channel_data(await client.receive()) == (0x4001, payload)
    finally:
        client.close()
    assert (
        server.metrics.registry.get_sample_value(
            "pulsebeam_turn_allocations_total", {"project": PROJECT}
        )
        == 1.0
    )


async def test_unpermitted_peer_gets_nothing(turn: TurnServer, echo_peer: Peer) -> None:
    peer, echo = echo_peer
    client = await TurnClient.connect("udp", _address(turn, "udp"))
    try:
        cred = credential()
        await client.allocate(cred.username, cred.password)
        client.send_indication(peer, b"no permission")
        with pytest.raises(TimeoutError):
            await client.receive(within=0.3)
        assert echo.received == []  # type: ignore[attr-defined]
    finally:
        client.close()


async def test_second_allocate_is_a_mismatch_and_retransmit_is_answered(turn: TurnServer) -> None:
    client = await TurnClient.connect("udp", _address(turn, "udp"))
    try:
        cred = credential()
        first = await client.allocate(cred.username, cred.password)
        request = client.last_sent
        # The very same request again (a UDP retransmission) gets the very same answer.
        client.send_raw(request)
        again = await asyncio.wait_for(client.answer(first.transaction_id), 3)
        assert again.raw == first.raw
        assert len(turn.manager.allocations) == 1
        # A new Allocate on the same 5-tuple is a mismatch.
        with pytest.raises(StunError) as info:
            await client.allocate(cred.username, cred.password)
        assert info.value.code == 437
    finally:
        client.close()


async def test_refresh_and_delete(turn: TurnServer) -> None:
    client = await TurnClient.connect("udp", _address(turn, "udp"))
    try:
        cred = credential()
        await client.allocate(cred.username, cred.password, lifetime=99_999)
        assert len(turn.manager.allocations) == 1
        answer = await client.refresh(99_999)
        assert decode_u32(answer.get(Attr.LIFETIME) or b"", "") == 3600  # capped at the max
        answer = await client.refresh(0)
        assert decode_u32(answer.get(Attr.LIFETIME) or b"", "") == 0
        assert turn.manager.allocations == {}
        with pytest.raises(StunError) as info:
            await client.refresh(600)
        assert info.value.code == 437
    finally:
        client.close()


async def test_allocation_expires_and_is_cleaned_up(turn: TurnServer) -> None:
    client = await TurnClient.connect("udp", _address(turn, "udp"))
    try:
        cred = credential()
        answer = await client.allocate(cred.username, cred.password, lifetime=1)
        relayed = client.relayed_address(answer)
        assert decode_u32(answer.get(Attr.LIFETIME) or b"", "") == 1
        for _ in range(40):
            if not turn.manager.allocations:
                break
            await asyncio.sleep(0.1)
        assert turn.manager.allocations == {}
        # The relay port is closed: binding it again works.
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=relayed
        )
        transport.close()
    finally:
        client.close()


async def test_tcp_allocation_ends_with_the_connection(turn: TurnServer) -> None:
    client = await TurnClient.connect("tcp", _address(turn, "tcp"))
    cred = credential()
    await client.allocate(cred.username, cred.password)
    assert len(turn.manager.allocations) == 1
    client.close()
    for _ in range(50):
        if not turn.manager.allocations:
            break
        await asyncio.sleep(0.02)
    assert turn.manager.allocations == {}


async def test_idle_tcp_connection_is_closed(turn: TurnServer) -> None:
    turn.tcp_idle_timeout = 0.2  # read when a connection opens
    client = await TurnClient.connect("tcp", _address(turn, "tcp"))
    try:
        for _ in range(50):
            if client.transport.is_closing() or not turn._connections:
                break
            await asyncio.sleep(0.05)
        assert not turn._connections  # the server closed it
    finally:
        client.close()


async def test_message_integrity_sha256(turn: TurnServer) -> None:
    client = await TurnClient.connect("udp", _address(turn, "udp"))
    try:
        client.sha256 = True
        cred = credential()
        answer = await client.allocate(cred.username, cred.password)
        assert list(answer.integrity_offsets) == [Attr.MESSAGE_INTEGRITY_SHA256]
        key = long_term_key(cred.username, "pulsebeam", cred.password, sha256=True)
        assert answer.check_integrity(key)
    finally:
        client.close()


async def test_channel_bind_rules(turn: TurnServer, echo_peer: Peer) -> None:
    peer, _ = echo_peer
    client = await TurnClient.connect("udp", _address(turn, "udp"))
    try:
        cred = credential()
        await client.allocate(cred.username, cred.password)
        await client.channel_bind(0x4000, peer)
        await client.channel_bind(0x4000, peer)  # refresh: same binding is fine
        for channel, target, code in (
            (0x3FFF, peer, 400),  # below the range
            (0x8000, peer, 400),  # above the range
            (0x4001, peer, 400),  # the peer already has channel 0x4000
            (0x4000, (peer[0], peer[1] + 1), 400),  # the channel already has a peer
        ):
            with pytest.raises(StunError) as info:
                await client.channel_bind(channel, target)
            assert info.value.code == code
    finally:
        client.close()


async def test_unsupported_requests(turn: TurnServer) -> None:
    client = await TurnClient.connect("udp", _address(turn, "udp"))
    try:
        cred = credential()
        client.username, client.password = cred.username, cred.password
        cases: list[tuple[list[tuple[int, bytes]], int]] = [
            ([(Attr.REQUESTED_TRANSPORT, b"\x06\0\0\0")], 442),  # TCP relays (RFC 6062)
            ([], 400),  # REQUESTED-TRANSPORT missing
            ([(Attr.REQUESTED_TRANSPORT, b"\x11\0\0\0"), (Attr.EVEN_PORT, b"\x80")], 508),
            ([(Attr.REQUESTED_TRANSPORT, b"\x11\0\0\0"), (Attr.RESERVATION_TOKEN, b"x" * 8)], 508),
            (
                [
                    (Attr.REQUESTED_TRANSPORT, b"\x11\0\0\0"),
                    (Attr.REQUESTED_ADDRESS_FAMILY, b"\2\0\0\0"),
                ],
                440,
            ),
            ([(Attr.REQUESTED_TRANSPORT, b"\x11\0\0\0"), (0x0777, b"????")], 420),
        ]
        for attributes, code in cases:
            with pytest.raises(StunError) as info:
                await client.authed(Method.ALLOCATE, attributes)
            assert info.value.code == code, info.value.reason
        unknown = info.value.message.get(Attr.UNKNOWN_ATTRIBUTES) or b""
        assert decode_unknown_attributes(unknown) == [0x0777]
        with pytest.raises(StunError) as info:
            await client.create_permission(("127.0.0.1", 9))
        assert info.value.code == 437  # no allocation yet
    finally:
        client.close()


async def test_drain_usage_reports_relayed_traffic(turn: TurnServer, echo_peer: Peer) -> None:
    peer, _ = echo_peer
    client = await TurnClient.connect("udp", _address(turn, "udp"))
    try:
        cred = credential()
        await client.allocate(cred.username, cred.password)
        await client.channel_bind(0x4002, peer)
        for _ in range(10):
            client.send_channel(0x4002, b"x" * 50)
            await client.receive()
        (usage,) = turn.drain_usage()
        assert usage.project_id == PROJECT
        assert (usage.turn_packets, usage.turn_bytes, usage.turn_allocations) == (20, 1000, 1)
        assert turn.drain_usage() == []  # drained
        assert (
            turn.metrics.registry.get_sample_value(
                "pulsebeam_turn_relayed_bytes_total", {"project": PROJECT}
            )
            == 1000.0
        )
    finally:
        client.close()


async def test_disabled_server_binds_nothing(make_server: ServerFactory) -> None:
    server = await make_server(enabled=False)
    assert server.udp_address is None
    assert server.tcp_address is None


async def test_permission_and_channel_lifetimes(turn: TurnServer, echo_peer: Peer) -> None:
    """Permissions last 300 s, channels 600 s, allocations their LIFETIME (RFC 8656); the
    sweeper is driven with a future clock instead of waiting."""
    peer, echo = echo_peer
    client = await TurnClient.connect("udp", _address(turn, "udp"))
    try:
        cred = credential()
        await client.allocate(cred.username, cred.password, lifetime=900)
        await client.channel_bind(0x4000, peer)
        (allocation,) = turn.manager.allocations.values()
        now = time.monotonic()
        turn.manager.sweep(now + 299)
        assert set(allocation.permissions) == {peer[0]}
        assert allocation.channels == {0x4000: peer}
        turn.manager.sweep(now + 301)
        assert allocation.permissions == {}  # expired: relaying stops ...
        client.send_channel(0x4000, b"late")
        with pytest.raises(TimeoutError):
            await client.receive(within=0.3)
        assert echo.received == []  # type: ignore[attr-defined]
        assert allocation.channels == {0x4000: peer}  # ... though the channel lives on
        turn.manager.sweep(now + 601)
        assert allocation.channels == {}
        assert allocation.peer_channels == {}
        assert len(turn.manager.allocations) == 1
        turn.manager.sweep(now + 901)
        assert turn.manager.allocations == {}
        assert allocation.closed
    finally:
        client.close()
