"""A credential's expiry limits new allocations, not the life of one it created: requests on the
allocation with its own username are accepted after the expiry while the key is live and the
allocation is younger than ``max_session_secs``. Real server, real sockets; credentials that
expire within 2 s keep the waits short."""

from __future__ import annotations

import asyncio
import time

import pytest

from pulsebeam.turn.attributes import decode_u32
from pulsebeam.turn.channeldata import parse_channel_data
from pulsebeam.turn.client import StunError, TurnClient
from pulsebeam.turn.credentials import TurnCredential, mint_credential
from pulsebeam.turn.server import SWEEP_INTERVAL, TurnServer
from pulsebeam.turn.stun import Attr, Message
from tests.turn.conftest import KID, PROJECT, SECRET, ServerFactory, credential

Peer = tuple[tuple[str, int], object]


def _short_credential(kid: str = KID) -> TurnCredential:
    """A credential that expires 1 to 2 s from now (expiries are whole seconds)."""
    return mint_credential(SECRET, kid, PROJECT, int(time.time()) + 2)


async def _until_expired(cred: TurnCredential) -> None:
    await asyncio.sleep(max(0.0, cred.expires_at - time.time()) + 0.05)
    assert time.time() > cred.expires_at


async def _client(server: TurnServer) -> TurnClient:
    assert server.udp_address is not None
    return await TurnClient.connect("udp", server.udp_address)


async def _refused(awaitable: object) -> tuple[int, str]:
    with pytest.raises(StunError) as info:
        await awaitable  # type: ignore[misc]
    return info.value.code, info.value.reason


def _lifetime(answer: Message) -> int:
    return decode_u32(answer.get(Attr.LIFETIME) or b"", "LIFETIME")


async def test_allocation_outlives_its_credential(turn: TurnServer, echo_peer: Peer) -> None:
    peer, echo = echo_peer
    cred = _short_credential()
    client, newcomer = await _client(turn), await _client(turn)
    try:
        await client.allocate(cred.username, cred.password)
        await client.channel_bind(0x4000, peer)
        await _until_expired(cred)

        # The allocation's own (expired) credential still refreshes, permits and binds ...
        assert _lifetime(await client.refresh(600)) == 600
        await client.create_permission(peer)
        await client.channel_bind(0x4000, peer)
        # ... and the relay keeps working both ways, over the channel and by Send indication.
        client.send_channel(0x4000, b"after expiry")
        assert parse_channel_data(await client.receive()) == (0x4000, b"after expiry")
        client.send_indication(peer, b"indication after expiry")
        # The echo comes back on the peer's channel.
        assert parse_channel_data(await client.receive()) == (0x4000, b"indication after expiry")
        payloads = [data for data, _ in echo.received]  # type: ignore[attr-defined]
        assert payloads == [b"after expiry", b"indication after expiry"]

        # A new allocation needs a credential that has not expired.
        assert await _refused(newcomer.allocate(cred.username, cred.password)) == (
            401,
            "credential expired",
        )
        assert len(turn.manager.allocations) == 1
        # The grace belongs to the allocation's username only: another expired credential of
        # the same key is refused, and a valid other credential is still the wrong one (441).
        stale = mint_credential(SECRET, KID, PROJECT, cred.expires_at - 1)
        client.username, client.password = stale.username, stale.password
        assert await _refused(client.refresh(600)) == (401, "credential expired")
        other = credential()
        client.username, client.password = other.username, other.password
        assert (await _refused(client.refresh(600)))[0] == 441
        # The HMAC is still checked: the right username with a wrong password is refused.
        client.username, client.password = cred.username, "not the password"
        assert await _refused(client.refresh(600)) == (401, "wrong credentials")
    finally:
        client.close()
        newcomer.close()


async def test_revocation_ends_an_allocation_past_its_credential(
    turn: TurnServer, live_keys: set[str], echo_peer: Peer
) -> None:
    peer, _ = echo_peer
    cred = _short_credential()
    client = await _client(turn)
    try:
        await client.allocate(cred.username, cred.password)
        await client.channel_bind(0x4000, peer)
        await _until_expired(cred)
        await client.refresh(600)
        # The key leaves the store: its credentials stop working at once, expired or not ...
        live_keys.discard(KID)
        assert await _refused(client.refresh(600)) == (401, "API key revoked or unknown")
        assert await _refused(client.channel_bind(0x4000, peer)) == (
            401,
            "API key revoked or unknown",
        )
        # ... and the revocation event tears the allocation down: nothing is relayed any more.
        assert turn.revoke_key(KID) == 1
        assert turn.manager.allocations == {}
        client.send_channel(0x4000, b"after revocation")
        with pytest.raises(TimeoutError):
            await client.receive(within=0.3)
        assert (await _refused(client.refresh(600)))[0] == 401
    finally:
        client.close()


async def test_max_session_bounds_the_grace(make_server: ServerFactory) -> None:
    bounded = await make_server(max_session_secs=3)
    strict = await make_server(max_session_secs=0)
    cred, lasting = _short_credential(), credential()
    short_client, long_client, strict_client = (
        await _client(bounded),
        await _client(bounded),
        await _client(strict),
    )
    try:
        await short_client.allocate(cred.username, cred.password)
        await long_client.allocate(lasting.username, lasting.password)
        await strict_client.allocate(cred.username, cred.password)
        allocation = next(
            a for a in bounded.manager.allocations.values() if a.username == cred.username
        )
        await _until_expired(cred)

        # Within the bound a Refresh on the expired credential is granted only the time left.
        session_left = allocation.created_at + 3 - time.monotonic()
        assert session_left > 0
        granted = _lifetime(await short_client.refresh(600))
        assert 1 <= granted <= 2
        # max_session_secs = 0: no grace at all, the expiry ends the allocation's refreshes.
        assert await _refused(strict_client.refresh(600)) == (401, "credential expired")

        # Past the bound the expired credential is refused, and the allocation ends at the end
        # of its (capped) lifetime; a valid credential's allocation is unaffected.
        await asyncio.sleep(max(0.0, allocation.created_at + 3 - time.monotonic()) + 0.05)
        assert await _refused(short_client.refresh(600)) == (401, "credential expired")
        assert allocation.expires_at <= allocation.created_at + 4  # 3 s, rounded up to 1 s
        await asyncio.sleep(allocation.expires_at - time.monotonic() + SWEEP_INTERVAL + 0.2)
        assert allocation.five_tuple not in bounded.manager.allocations
        assert allocation.closed
        assert _lifetime(await long_client.refresh(600)) == 600
    finally:
        for client in (short_client, long_client, strict_client):
            client.close()
