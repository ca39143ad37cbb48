"""Hardening regressions, each against the real server: oversized 420 answers, odd usernames,
the 401 limiter's memory, the per-allocation permission cap, failed TLS handshakes, a key revoked
mid-Allocate, relaying into the server's own listener, the per-IP connection cap, and quotas under
concurrent Allocates."""

from __future__ import annotations

import asyncio
import os
import ssl

import pytest

from pulsebeam.config import HostPort
from pulsebeam.turn.attributes import decode_error_code
from pulsebeam.turn.auth import RateLimiter
from pulsebeam.turn.client import StunError, TurnClient
from pulsebeam.turn.handler import MAX_PERMISSIONS
from pulsebeam.turn.server import TurnServer
from pulsebeam.turn.stun import Attr, Message, MessageClass, Method, parse_message
from tests.turn.conftest import KID, ServerFactory, credential


async def _client(server: TurnServer) -> TurnClient:
    assert server.udp_address is not None
    return await TurnClient.connect("udp", server.udp_address)


async def test_many_unknown_attributes_get_a_small_420(turn: TurnServer) -> None:
    # 16,000 unknown comprehension-required attributes in one 64 kB datagram: listing them all
    # in the answer would overflow a STUN attribute and amplify an unauthenticated request.
    client = await _client(turn)
    try:
        msg = Message(Method.BINDING, MessageClass.REQUEST, os.urandom(12))
        for attr_type in range(0x1000, 0x1000 + 16_000):
            msg.add(attr_type, b"")
        with pytest.raises(StunError) as info:
            await client.transact(msg, sign=False, within=2.0, retransmit=False)
        assert info.value.code == 420
        answer = info.value.message.raw
        assert len(answer) <= 200, len(answer)
        # The listener still works.
        ok = Message(Method.BINDING, MessageClass.REQUEST, os.urandom(12))
        assert (await client.transact(ok, sign=False)).get(Attr.XOR_MAPPED_ADDRESS) is not None
    finally:
        client.close()


@pytest.mark.parametrize("username", ["\u00b2:kid_0123456789abcdef:p", "1\u0663:kid_x:p"])
async def test_non_ascii_digits_in_username_get_401(turn: TurnServer, username: str) -> None:
    # "²".isdigit() is True but int("²") raises: that must be a 401, not an exception.
    client = await _client(turn)
    try:
        with pytest.raises(StunError) as info:
            await client.allocate(username, "password")
        assert info.value.code == 401
    finally:
        client.close()


def test_rate_limiter_memory_stays_bounded() -> None:
    now = [0.0]
    limiter = RateLimiter(1.0, 2.0, max_keys=100, clock=lambda: now[0])
    for i in range(1_000):
        limiter.allow(f"10.0.{i // 256}.{i % 256}")  # each source fails once, none refills
    assert len(limiter._buckets) <= 100
    now[0] += 10.0  # every bucket has refilled: the next new source finds room
    # A source that is being limited stays limited while the table is pruned.
    assert limiter.allow("192.0.2.1")
    assert limiter.allow("192.0.2.1")
    assert not limiter.allow("192.0.2.1")
    for i in range(200):
        limiter.allow(f"10.1.{i // 256}.{i % 256}")
    assert len(limiter._buckets) <= 100
    assert not limiter.allow("192.0.2.1")


async def test_permissions_per_allocation_are_capped(turn: TurnServer) -> None:
    client = await _client(turn)
    try:
        cred = credential()
        await client.allocate(cred.username, cred.password)
        peers = [(f"127.0.{i // 250}.{i % 250 + 1}", 9) for i in range(MAX_PERMISSIONS)]
        await client.create_permission(*peers)
        allocation = next(iter(turn.manager.allocations.values()))
        assert len(allocation.permissions) == MAX_PERMISSIONS
        with pytest.raises(StunError) as info:
            await client.create_permission(peers[0], ("127.9.9.9", 9))
        assert info.value.code == 508
        with pytest.raises(StunError) as info:
            await client.channel_bind(0x4000, ("127.9.9.9", 9))
        assert info.value.code == 508
        assert "127.9.9.9" not in allocation.permissions
        assert len(allocation.permissions) == MAX_PERMISSIONS
        # Refreshing permitted peers and binding a channel to one still work.
        await client.create_permission(*peers[:10])
        await client.channel_bind(0x4000, peers[0])
    finally:
        client.close()


async def test_failed_tls_handshakes_leave_nothing_behind(
    make_server: ServerFactory, tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    server = await make_server(tls_context=tls_contexts[0], tls_listen=HostPort("127.0.0.1", 0))
    assert server.tls_address is not None
    for _ in range(20):  # connections that never complete a handshake
        reader, writer = await asyncio.open_connection(*server.tls_address)
        writer.write(b"GET / HTTP/1.0\r\n\r\n")  # not TLS: the handshake fails
        await asyncio.wait_for(reader.read(), 2.0)
        writer.close()
        await writer.wait_closed()
    for _ in range(50):
        if not server._connections:
            break
        await asyncio.sleep(0.02)
    assert not server._connections


async def test_key_revoked_while_an_allocate_is_pending(
    turn: TurnServer, live_keys: set[str]
) -> None:
    client = await _client(turn)
    try:
        cred = credential()
        attempt = asyncio.ensure_future(client.allocate(cred.username, cred.password))
        for _ in range(10_000):  # until the server is binding the relay socket
            if turn.manager._pending:
                break
            await asyncio.sleep(0)
        assert turn.manager._pending
        live_keys.discard(KID)
        assert turn.revoke_key(KID) == 0  # nothing to tear down yet
        with pytest.raises(StunError) as info:
            await attempt
        assert info.value.code == 401
        assert not turn.manager.allocations
    finally:
        client.close()


async def test_no_relaying_into_the_servers_own_listener(
    turn: TurnServer, echo_peer: tuple[tuple[str, int], object]
) -> None:
    # Loopback is allowed here (as for tests), so only the own-listener rule can refuse.
    assert turn.udp_address is not None
    listener = ("127.0.0.1", turn.udp_address[1])
    client = await _client(turn)
    try:
        cred = credential()
        await client.allocate(cred.username, cred.password)
        await client.create_permission(echo_peer[0])  # permits 127.0.0.1, any port
        with pytest.raises(StunError) as info:
            await client.channel_bind(0x4001, listener)
        assert info.value.code == 403
        binding = Message(Method.BINDING, MessageClass.REQUEST, os.urandom(12))
        client.send_indication(listener, binding.encode())  # would be answered to the relay
        with pytest.raises(TimeoutError):
            await client.receive(within=0.3)
        # The echo peer on the same IP is still relayed to.
        client.send_indication(echo_peer[0], b"ping")
        assert b"ping" in await client.receive()
    finally:
        client.close()


async def test_stream_connections_per_source_ip_are_capped(turn: TurnServer) -> None:
    assert turn.tcp_address is not None
    turn.max_connections_per_ip = 3
    streams = [await asyncio.open_connection(*turn.tcp_address) for _ in range(5)]
    try:
        # The two past the cap are closed by the server at once.
        for reader, _writer in streams[3:]:
            assert await asyncio.wait_for(reader.read(), 2.0) == b""
        # The first three still answer a Binding request.
        for reader, writer in streams[:3]:
            request = Message(Method.BINDING, MessageClass.REQUEST, os.urandom(12))
            writer.write(request.encode())
            header = await asyncio.wait_for(reader.readexactly(20), 2.0)
            assert header[8:20] == request.transaction_id
    finally:
        for _reader, writer in streams:
            writer.close()
    # Closed connections free their places.
    for _ in range(50):
        if not turn._connections:
            break
        await asyncio.sleep(0.02)
    reader, writer = await asyncio.open_connection(*turn.tcp_address)
    try:
        request = Message(Method.BINDING, MessageClass.REQUEST, os.urandom(12))
        writer.write(request.encode())
        assert len(await asyncio.wait_for(reader.readexactly(20), 2.0)) == 20
    finally:
        writer.close()


async def test_concurrent_allocates_respect_the_quota(make_server: ServerFactory) -> None:
    server = await make_server(user_quota=2)
    clients = [await _client(server) for _ in range(6)]
    try:
        cred = credential()
        results = await asyncio.gather(
            *(client.allocate(cred.username, cred.password) for client in clients),
            return_exceptions=True,
        )
        refused = [r for r in results if isinstance(r, StunError)]
        assert len(refused) == 4
        assert {r.code for r in refused} == {486}
        assert len(server.manager.allocations) == 2
    finally:
        for client in clients:
            client.close()


async def _bare_allocate_burst(server: TurnServer, count: int) -> list[int]:
    """Sends ``count`` credential-less Allocates at once; the error codes that come back."""
    client = await _client(server)
    try:
        for _ in range(count):
            msg = Message(Method.ALLOCATE, MessageClass.REQUEST, os.urandom(12))
            msg.add(Attr.REQUESTED_TRANSPORT, b"\x11\0\0\0")
            client.send_raw(msg.encode())
        codes = []
        for _ in range(count):
            try:
                answer = parse_message(await asyncio.wait_for(client.inbox.get(), 0.5))
            except TimeoutError:
                break  # the rest were dropped
            assert answer.message_class == MessageClass.ERROR
            codes.append(decode_error_code(answer.get(Attr.ERROR_CODE) or b"")[0])
        return codes
    finally:
        client.close()


async def test_challenges_without_credentials_are_rate_limited(
    make_server: ServerFactory,
) -> None:
    # A 20-byte Allocate draws a ~140-byte 401: unlimited, a spoofed source could use us as an
    # amplifier. Past the per-source limit such requests are dropped unanswered.
    server = await make_server(challenge_rate=5.0)  # bursts of 10
    codes = await _bare_allocate_burst(server, 40)
    assert set(codes) == {401}
    # The burst of 10, plus whatever refilled (5 per second) while the burst was handled.
    assert 10 <= len(codes) <= 13, len(codes)
    limited = server.metrics.registry.get_sample_value("pulsebeam_turn_rate_limited_total")
    assert limited is not None
    assert limited >= 40 - 13
    # A client with valid credentials still allocates (its first, credential-less request is
    # retransmitted until the bucket has refilled; its signed requests are not limited).
    client = await _client(server)
    try:
        cred = credential()
        answer = await asyncio.wait_for(client.allocate(cred.username, cred.password), 5.0)
        assert client.relayed_address(answer)[0] == "127.0.0.1"
        assert len(server.manager.allocations) == 1
    finally:
        client.close()


async def test_challenge_rate_zero_does_not_limit(make_server: ServerFactory) -> None:
    server = await make_server(challenge_rate=0.0)
    assert await _bare_allocate_burst(server, 40) == [401] * 40
