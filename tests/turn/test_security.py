"""Security: refused peers (403), bad credentials (401), stale nonces (438), revoked keys,
quotas (486), the 401 rate limit and the bandwidth cap — each against the real server."""

from __future__ import annotations

import asyncio
import os

import pytest

from pulsebeam.turn.attributes import decode_error_code, encode_xor_address
from pulsebeam.turn.client import StunError, TurnClient
from pulsebeam.turn.server import TurnServer
from pulsebeam.turn.stun import Attr, Message, MessageClass, Method, long_term_key
from tests.turn.conftest import KID, ServerFactory, credential
from tests.turn.test_peerfilter import REFUSED

Peer = tuple[tuple[str, int], object]


async def _client(server: TurnServer) -> TurnClient:
    assert server.udp_address is not None
    return await TurnClient.connect("udp", server.udp_address)


async def _code(awaitable: object) -> int:
    with pytest.raises(StunError) as info:
        await awaitable  # type: ignore[misc]
    return info.value.code


async def test_every_refused_form_gets_403(make_server: ServerFactory) -> None:
    # The server under test does NOT allow loopback: loopback is refused like the rest.
    server = await make_server(allow_loopback=False)
    client = await _client(server)
    try:
        cred = credential()
        await client.allocate(cred.username, cred.password)
        for address in REFUSED:
            assert await _code(client.create_permission((address, 9))) == 403, address
        assert await _code(client.channel_bind(0x4000, ("169.254.169.254", 80))) == 403
        # One refused address refuses the whole request: nothing is installed.
        allocation = next(iter(server.manager.allocations.values()))
        assert await _code(client.create_permission(("8.8.8.8", 9), ("10.0.0.1", 9))) == 403
        assert allocation.permissions == {}
        refused = server.metrics.registry.get_sample_value("pulsebeam_turn_refused_peers_total")
        assert refused == len(REFUSED) + 2
    finally:
        client.close()


async def test_operator_deny_list_beats_allow_loopback(
    make_server: ServerFactory, echo_peer: Peer
) -> None:
    server = await make_server(deny_peers=("127.0.0.0/8",))
    client = await _client(server)
    try:
        cred = credential()
        await client.allocate(cred.username, cred.password)
        with pytest.raises(StunError) as info:
            await client.create_permission(echo_peer[0])
        assert info.value.code == 403
        assert "deny list" in info.value.reason
    finally:
        client.close()


async def test_ipv6_public_peer_is_a_family_mismatch(turn: TurnServer) -> None:
    client = await _client(turn)
    try:
        cred = credential()
        await client.allocate(cred.username, cred.password)
        assert await _code(client.create_permission(("2606:4700::1111", 9))) == 443
    finally:
        client.close()


async def test_challenge_then_wrong_password(turn: TurnServer) -> None:
    client = await _client(turn)
    try:
        cred = credential()
        assert await _code(client.allocate(cred.username, "not the password")) == 401
        assert turn.manager.allocations == {}
        assert turn.metrics.registry.get_sample_value("pulsebeam_turn_unauthorized_total") == 2.0
    finally:
        client.close()


async def test_credential_of_another_secret(turn: TurnServer) -> None:
    client = await _client(turn)
    try:
        cred = credential(secret=b"another secret")
        assert await _code(client.allocate(cred.username, cred.password)) == 401
    finally:
        client.close()


async def test_expired_credential(turn: TurnServer) -> None:
    client = await _client(turn)
    try:
        cred = credential(ttl=-10)
        with pytest.raises(StunError) as info:
            await client.allocate(cred.username, cred.password)
        assert (info.value.code, info.value.reason) == (401, "credential expired")
    finally:
        client.close()


async def test_unknown_key(turn: TurnServer) -> None:
    client = await _client(turn)
    try:
        cred = credential(kid="kid_ffffffffffffffff")
        with pytest.raises(StunError) as info:
            await client.allocate(cred.username, cred.password)
        assert (info.value.code, info.value.reason) == (401, "API key revoked or unknown")
    finally:
        client.close()


async def test_revoked_key_tears_down_allocations(
    turn: TurnServer, live_keys: set[str], echo_peer: Peer
) -> None:
    peer, _ = echo_peer
    clients = [await _client(turn) for _ in range(3)]
    try:
        for client, kid in zip(clients, (KID, KID, "kid_aaaaaaaaaaaaaaaa"), strict=True):
            cred = credential(kid=kid)
            await client.allocate(cred.username, cred.password)
            await client.channel_bind(0x4000, peer)
        live_keys.discard(KID)
        assert turn.revoke_key(KID) == 2
        assert len(turn.manager.allocations) == 1  # the other key's allocation stays
        # Relaying stops at once, and the credential no longer authenticates anything.
        clients[0].send_channel(0x4000, b"after revocation")
        with pytest.raises(TimeoutError):
            await clients[0].receive(within=0.3)
        with pytest.raises(StunError) as info:
            await clients[0].refresh(600)
        assert (info.value.code, info.value.reason) == (401, "API key revoked or unknown")
        clients[2].send_channel(0x4000, b"still fine")
        assert await clients[2].receive()
    finally:
        for client in clients:
            client.close()


async def test_stale_nonce_gets_438_and_a_fresh_nonce(make_server: ServerFactory) -> None:
    server = await make_server(nonce_ttl_secs=1)
    client = await _client(server)
    try:
        cred = credential()
        await client.allocate(cred.username, cred.password)
        old_nonce = client.nonce
        await asyncio.sleep(2.1)
        msg = Message(Method.REFRESH, MessageClass.REQUEST, os.urandom(12))
        with pytest.raises(StunError) as info:
            await client.transact(msg)
        assert info.value.code == 438
        fresh = info.value.message.get(Attr.NONCE)
        assert fresh
        assert fresh != old_nonce
        client.nonce = fresh
        await client.refresh(600)  # the fresh nonce works
    finally:
        client.close()


async def test_forged_nonce_is_stale(turn: TurnServer) -> None:
    client = await _client(turn)
    try:
        cred = credential()
        client.username, client.password, client.realm = cred.username, cred.password, "pulsebeam"
        client.nonce = b"obMatJos2gAAAforged-nonce-of-my-own-making"
        msg = Message(Method.ALLOCATE, MessageClass.REQUEST, os.urandom(12))
        msg.add(Attr.REQUESTED_TRANSPORT, b"\x11\0\0\0")
        assert await _code(client.transact(msg)) == 438
    finally:
        client.close()


async def test_other_credential_on_the_allocation_gets_441(turn: TurnServer) -> None:
    client = await _client(turn)
    try:
        cred = credential()
        await client.allocate(cred.username, cred.password)
        other = credential(kid="kid_aaaaaaaaaaaaaaaa")
        client.username, client.password = other.username, other.password
        assert await _code(client.refresh(600)) == 441
    finally:
        client.close()


async def test_quota_per_credential(make_server: ServerFactory) -> None:
    server = await make_server(user_quota=2)
    cred = credential()
    clients = [await _client(server) for _ in range(3)]
    try:
        await clients[0].allocate(cred.username, cred.password)
        await clients[1].allocate(cred.username, cred.password)
        with pytest.raises(StunError) as info:
            await clients[2].allocate(cred.username, cred.password)
        assert (info.value.code, info.value.reason) == (
            486,
            "Allocation Quota Reached: 2 per credential",
        )
        # Deleting one allocation frees a slot.
        await clients[0].refresh(0)
        await clients[2].allocate(cred.username, cred.password)
    finally:
        for client in clients:
            client.close()


async def test_quota_per_project(make_server: ServerFactory) -> None:
    server = await make_server(project_quota=2)
    clients = [await _client(server) for _ in range(3)]
    try:
        for client, kid in zip(clients[:2], (KID, "kid_aaaaaaaaaaaaaaaa"), strict=True):
            cred = credential(kid=kid)
            await client.allocate(cred.username, cred.password)
        cred = credential(kid="kid_bbbbbbbbbbbbbbbb")
        with pytest.raises(StunError) as info:
            await clients[2].allocate(cred.username, cred.password)
        assert (info.value.code, info.value.reason) == (
            486,
            "Allocation Quota Reached: 2 per project",
        )
        other_project = credential(kid="kid_bbbbbbbbbbbbbbbb", project="proj2")
        await clients[2].allocate(other_project.username, other_project.password)
    finally:
        for client in clients:
            client.close()


async def test_failed_credentials_are_rate_limited(make_server: ServerFactory) -> None:
    server = await make_server(auth_failure_rate=2.0)  # bursts of 4
    client = await _client(server)
    try:
        cred = credential()
        assert await _code(client.allocate(cred.username, "wrong")) == 401
        codes = []
        for _ in range(6):
            msg = Message(Method.ALLOCATE, MessageClass.REQUEST, os.urandom(12))
            msg.add(Attr.REQUESTED_TRANSPORT, b"\x11\0\0\0")
            try:
                await client.transact(msg, within=0.5, retransmit=False)
            except StunError as exc:
                codes.append(exc.code)
            except TimeoutError:
                break
        answered = 1 + len(codes)
        assert set(codes) == {401}
        # The burst of 4, then silence (one more may pass if the machine is slow enough for
        # the bucket to refill between two requests).
        assert 4 <= answered <= 5
        limited = server.metrics.registry.get_sample_value("pulsebeam_turn_rate_limited_total")
        assert limited is not None
        assert limited >= 1.0
        # A client without credentials is still challenged (challenges have their own limit).
        bare = Message(Method.ALLOCATE, MessageClass.REQUEST, os.urandom(12))
        assert await _code(client.transact(bare, sign=False)) == 401
    finally:
        client.close()


async def test_bandwidth_cap_drops_the_excess(make_server: ServerFactory, echo_peer: Peer) -> None:
    server = await make_server(bandwidth=10_000)  # bytes per second, 1 s burst
    peer, echo = echo_peer
    client = await _client(server)
    try:
        cred = credential()
        await client.allocate(cred.username, cred.password)
        await client.channel_bind(0x4000, peer)
        for _ in range(50):
            client.send_channel(0x4000, b"x" * 1000)  # 50 kB at once: 5 times the cap
        await asyncio.sleep(0.3)
        relayed = len(echo.received)  # type: ignore[attr-defined]
        assert 5 <= relayed <= 15  # about 10 kB of the 50 kB, shared with the echoes
    finally:
        client.close()


async def test_send_indication_to_a_refused_peer_is_dropped(
    make_server: ServerFactory,
) -> None:
    server = await make_server(allow_loopback=False)
    client = await _client(server)
    try:
        cred = credential()
        await client.allocate(cred.username, cred.password)
        tid = os.urandom(12)
        msg = Message(Method.SEND, MessageClass.INDICATION, tid)
        msg.add(Attr.XOR_PEER_ADDRESS, encode_xor_address(("127.0.0.1", 9), tid))
        msg.add(Attr.DATA, b"x")
        client.send_raw(msg.encode())
        allocation = next(iter(server.manager.allocations.values()))
        await asyncio.sleep(0.1)
        assert allocation.packets == 0
    finally:
        client.close()


async def test_password_algorithm_rules(turn: TurnServer) -> None:
    """RFC 8489 9.2.4: PASSWORD-ALGORITHM needs the offered PASSWORD-ALGORITHMS echoed
    unchanged; anything else is a downgrade attempt or a broken client: 400."""
    client = await _client(turn)
    try:
        cred = credential()
        client.sha256 = True
        await client.allocate(cred.username, cred.password)  # the well-behaved way works
        await client.refresh(600)
        key = long_term_key(cred.username, "pulsebeam", cred.password, sha256=True)
        sha256 = b"\x00\x02\x00\x00"
        for echoed, reason in (
            (None, "PASSWORD-ALGORITHM and PASSWORD-ALGORITHMS go together"),
            (sha256, "PASSWORD-ALGORITHMS differs from ours"),  # MD5 dropped from the list
        ):
            msg = Message(Method.REFRESH, MessageClass.REQUEST, os.urandom(12))
            msg.add(Attr.USERNAME, cred.username.encode())
            msg.add(Attr.REALM, b"pulsebeam")
            msg.add(Attr.NONCE, client.nonce)
            if echoed is not None:
                msg.add(Attr.PASSWORD_ALGORITHMS, echoed)
            msg.add(Attr.PASSWORD_ALGORITHM, sha256)
            client.send_raw(msg.encode(key, sha1=False, sha256=True))
            answer = await asyncio.wait_for(client.answer(msg.transaction_id), 3)
            assert decode_error_code(answer.get(Attr.ERROR_CODE) or b"") == (400, reason)
    finally:
        client.close()
