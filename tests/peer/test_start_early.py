"""``create_peer(..., start=True)``: Recv goes out while Prepare is under way (real server)."""

from __future__ import annotations

import asyncio
import time

import pytest

from pulsebeam.errors import TokenError
from pulsebeam.peer import Peer, PeerState, create_peer
from tests.fixtures.proxy import tcp_proxy
from tests.fixtures.server import ProjectKeys, RunningServer

TIMEOUT = 20.0
PREPARE_HOLD = 0.4  # the proxy holds back the answer to Prepare this long


def _hold_prepare(request_line: bytes) -> float:
    return PREPARE_HOLD if b"/Prepare " in request_line else 0.0


async def test_what_comes_before_prepare_answers_waits_for_it(
    server: RunningServer, keys: ProjectKeys, peers: list[Peer]
) -> None:
    bob = await create_peer(keys.token("g1", "bob"), server.grpc)
    peers.append(bob)
    await bob.wait_ready()
    async with (
        asyncio.timeout(TIMEOUT),
        tcp_proxy(server.address, hold=_hold_prepare) as proxy,
    ):
        url = f"http://127.0.0.1:{proxy.port}/grpc"
        alice = await create_peer(keys.token("g1", "alice"), url, start=True)
        peers.append(alice)
        # Recv was open, and bob's answer to its Join (an offer or a Join back, by the roles)
        # on its way to alice, while the proxy still held Prepare's answer.
        [prepare] = [c for c in proxy.connections if b"/Prepare " in c.request_line]
        [recv] = [c for c in proxy.connections if b"/Recv " in c.request_line]
        prepare_answered_at = prepare.downstream[0][0]
        first_message_at = recv.body_started_at()
        assert first_message_at is not None
        assert first_message_at < prepare_answered_at
        # ... and none of it was lost: the session it started connects and carries data.
        at_alice = await anext(alice.sessions())
        at_bob = await anext(bob.sessions())
        await at_alice.wait_connected()
        channel = at_alice.create_data_channel("hello")
        incoming = await anext(at_bob.data_channels())
        await channel.wait_open()
        channel.send("hi")
        assert await incoming.receive() == "hi"
    assert alice.state is PeerState.CONNECTED


async def test_a_refused_token_still_raises_from_create_peer(server: RunningServer) -> None:
    from pulsebeam.auth import AccessToken, KeyPair, PeerClaims, PeerPolicy

    pair = KeyPair.generate()  # a key the server never heard of: Prepare and Recv both refused
    claims = PeerClaims("g1", "alice")
    claims.set_allow_policy(PeerPolicy("*", "*"))
    token = AccessToken(pair.api_key, pair.api_secret).create_token(claims, 60)
    async with asyncio.timeout(TIMEOUT):
        with pytest.raises(TokenError, match=r"(Prepare|Recv): .*unknown"):
            await create_peer(token, server.grpc, start=True)


@pytest.mark.parametrize("start", [False, True])
async def test_prepare_goes_first(
    server: RunningServer, keys: ProjectKeys, peers: list[Peer], start: bool
) -> None:
    """Prepare's request leaves before Recv's (its answer is what the first session waits
    for), and a peer made without start sends no Recv at all."""
    async with asyncio.timeout(TIMEOUT), tcp_proxy(server.address) as proxy:
        peer = await create_peer(
            keys.token("g1", f"p{int(start)}"), f"http://127.0.0.1:{proxy.port}/grpc", start=start
        )
        peers.append(peer)
        if start:
            await peer.wait_ready()
        sent = sorted(
            (c.requested_at, c.request_line.split(b" ")[1].rsplit(b"/", 1)[-1])
            for c in proxy.connections
            if c.requested_at is not None  # (a spare connection that sent nothing yet)
        )
    assert [method for _, method in sent] == ([b"Prepare", b"Recv"] if start else [b"Prepare"])
    assert peer.state is (PeerState.CONNECTED if start else PeerState.NEW)


async def test_a_token_refreshed_while_prepare_is_held_keeps_its_newer_ice_servers(
    server: RunningServer, keys: ProjectKeys, peers: list[Peer]
) -> None:
    """The refresh's own Prepare answers first (with TURN credentials of the new token): the
    held first answer, for the old token, must not replace them."""
    prepares = 0

    def hold_first_prepare(request_line: bytes) -> float:
        nonlocal prepares
        if b"/Prepare " not in request_line:
            return 0.0
        prepares += 1
        return 1.6 if prepares == 1 else 0.0

    async def provider() -> str:
        return keys.token("g1", "alice", ttl=3600)

    short = keys.token("g1", "alice", ttl=2)  # a refresh is due about 1 s from now
    async with (
        asyncio.timeout(TIMEOUT),
        tcp_proxy(server.address, hold=hold_first_prepare) as proxy,
    ):
        url = f"http://127.0.0.1:{proxy.port}/grpc"
        alice = await create_peer(short, url, token_provider=provider, start=True)
        peers.append(alice)
    assert prepares == 2
    # TURN usernames are "<expiry>:<key>:<project>": the credential of the 1-hour token.
    expiries = [int(s.username.split(":")[0]) for s in alice.configuration.iceServers if s.username]
    assert expiries
    assert all(expiry > time.time() + 3000 for expiry in expiries)


async def test_a_peer_given_up_on_says_bye_to_those_who_wrote_to_it(
    server: RunningServer, keys: ProjectKeys, peers: list[Peer]
) -> None:
    """Recv announced alice; bob started a session with her. The application gives up on
    create_peer (Prepare is slow): bob's session ends at once, not at its setup timeout."""
    bob = await create_peer(keys.token("g1", "bob"), server.grpc, start=True)
    peers.append(bob)
    async with asyncio.timeout(TIMEOUT), tcp_proxy(server.address, hold=_slow_prepare) as proxy:
        url = f"http://127.0.0.1:{proxy.port}/grpc"
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1.0):
                await create_peer(keys.token("g1", "alice"), url, start=True)
        session = await anext(bob.sessions())
        assert str(session.other).startswith("g1/alice")
        assert await session.wait_closed() == "the other peer said bye"


def _slow_prepare(request_line: bytes) -> float:
    return 5.0 if b"/Prepare " in request_line else 0.0
