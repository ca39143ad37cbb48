"""Routing rules on the real server: discovery (Join), delivery, conn_id 0, both-sides policies,
self-addressed drops, project isolation, stream rotation, keepalive, expiry and limits."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import pytest

from pulsebeam import proto
from tests.fixtures.server import ProjectKeys, RunningServer, acreate_project
from tests.signaling.conftest import ClientFactory
from tests.signaling.grpcweb_client import Client, RecvStream, message, peer

OK, NOT_FOUND, PERMISSION_DENIED, RESOURCE_EXHAUSTED, UNAUTHENTICATED = 0, 5, 7, 8, 16


def kind(resp: proto.RecvResp) -> str | None:
    return resp.msg.payload.WhichOneof("payload_type")


async def assert_silent(stream: RecvStream, within: float = 0.6) -> None:
    with pytest.raises(TimeoutError):
        await stream.next(within)


async def test_join_discovery_and_signal_exchange(client: ClientFactory) -> None:
    alice, bob = client("room", "alice"), client("room", "bob")
    a, b = peer("room", "alice", 1001), peer("room", "bob", 2001)
    async with (
        bob.recv("room", "bob", 2001) as bob_stream,
        alice.recv("room", "alice", 1001) as alice_stream,
    ):
        join = await bob_stream.next()
        assert kind(join) == "join"
        assert join.msg.header.src == a
        assert join.msg.header.dst == b
        offer = message(a, peer("room", "bob", 0), "signal", generation_counter=3)
        offer.payload.signal.sdp.kind = proto.SDP_KIND_OFFER
        offer.payload.signal.sdp.sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n"
        offer.header.seqnum = 7
        offer.header.reliable = True
        assert (await alice.send(offer)).status == OK
        received = await bob_stream.next()
        assert received.msg == offer
        answer = message(b, a, "signal", generation_counter=3)
        answer.payload.signal.ice_candidate_batch.candidates.add(
            candidate="candidate:1 1 udp 1 127.0.0.1 5000 typ host", username="uf"
        )
        assert (await bob.send(answer)).status == OK
        assert (await alice_stream.next()).msg == answer
        # Alice opened second: nobody announces bob to her.
        await assert_silent(alice_stream)


async def test_self_addressed_messages_are_dropped(client: ClientFactory) -> None:
    alice = client("room", "alice")
    me = peer("room", "alice", 1101)
    async with alice.recv("room", "alice", 1101) as stream:
        reply = await alice.send(message(me, me, "signal"))
        assert reply.status == OK
        await assert_silent(stream)


async def test_conn_zero_reaches_the_newest_connection(client: ClientFactory) -> None:
    alice, bob = client("room", "alice"), client("room", "bob")
    a = peer("room", "alice", 1201)
    async with bob.recv("room", "bob", 3001) as old, bob.recv("room", "bob", 3002) as new:
        assert (await alice.send(message(a, peer("room", "bob", 0), "bye"))).status == OK
        assert kind(await new.next()) == "bye"
        await assert_silent(old, 0.3)
        assert (await alice.send(message(a, peer("room", "bob", 3001), "ack"))).status == OK
        assert kind(await old.next()) == "ack"
        missing = await alice.send(message(a, peer("room", "bob", 3999), "ack"))
        assert missing.status == NOT_FOUND
        assert "connection 3999" in missing.message
    await asyncio.sleep(0.1)
    gone = await alice.send(message(a, peer("room", "bob", 0), "join"))
    assert gone.status == NOT_FOUND


async def test_sender_policy_refuses(client: ClientFactory) -> None:
    alice = client("room", "alice", policy="room:bob*")
    a = peer("room", "alice", 1301)
    async with client("room", "carol").recv("room", "carol", 4001) as carol_stream:
        reply = await alice.send(message(a, peer("room", "carol"), "join"))
        assert reply.status == PERMISSION_DENIED
        assert "allow policy room:bob*" in reply.message
        other_group = await alice.send(message(a, peer("lobby", "bob"), "join"))
        assert other_group.status == PERMISSION_DENIED
        await assert_silent(carol_stream, 0.3)


async def test_receiver_policy_refusal_looks_like_an_absent_peer(client: ClientFactory) -> None:
    # Answering PERMISSION_DENIED here would tell alice that carol, who hides from her, is online.
    alice = client("room", "alice")
    carol = client("room", "carol", policy="room:dave")
    to_carol = message(peer("room", "alice", 1401), peer("room", "carol"))
    absent = await alice.send(to_carol)
    async with carol.recv("room", "carol", 4101) as carol_stream:
        reply = await alice.send(to_carol)
        assert (reply.status, reply.message) == (absent.status, absent.message)
        assert reply.status == NOT_FOUND
        assert reply.message == "peer room/carol has no open Recv stream"
        exact = await alice.send(message(peer("room", "alice", 1401), peer("room", "carol", 4101)))
        assert exact.status == NOT_FOUND
        assert exact.message == "peer room/carol connection 4101 has no open Recv stream"
        await assert_silent(carol_stream, 0.3)


async def test_join_broadcast_respects_both_policies(client: ClientFactory) -> None:
    carol = client("room", "carol", policy="room:dave")  # only wants dave
    bob = client("room", "bob")
    async with (
        carol.recv("room", "carol", 4201) as carol_stream,
        bob.recv("room", "bob", 4202) as bob_stream,
    ):
        # bob's arrival: carol's policy hides bob from her, so she gets no Join from him.
        await assert_silent(carol_stream, 0.3)
        async with client("room", "eve", policy="room:nobody").recv("room", "eve", 4203):
            await assert_silent(bob_stream, 0.3)  # eve's own policy reaches nobody
            await assert_silent(carol_stream, 0.1)
        async with client("room", "dave").recv("room", "dave", 4204):
            for stream in (carol_stream, bob_stream):
                join = await stream.next()
                assert kind(join) == "join"
                assert join.msg.header.src.peer_id == "dave"
        async with client("lobby", "dave").recv("lobby", "dave", 4205):
            await assert_silent(carol_stream, 0.3)  # other groups are not announced


async def test_projects_are_isolated(
    server: RunningServer, project: ProjectKeys, http: httpx.AsyncClient
) -> None:
    other = await acreate_project(server)
    intruder = Client(http, server.grpc, other.token("room", "mallory"))
    bob = Client(http, server.grpc, project.token("room", "bob"))
    async with bob.recv("room", "bob", 5001) as bob_stream:
        async with intruder.recv("room", "mallory", 5002):
            await assert_silent(bob_stream, 0.3)  # no Join across projects
        reply = await intruder.send(message(peer("room", "mallory", 5002), peer("room", "bob")))
        assert reply.status == NOT_FOUND


async def test_reopening_a_connection_replaces_its_stream(client: ClientFactory) -> None:
    alice, bob = client("room", "alice"), client("room", "bob")
    async with (
        bob.recv("room", "bob", 6001) as bob_stream,
        alice.recv("room", "alice", 6002) as first,
    ):
        assert kind(await bob_stream.next()) == "join"
        async with alice.recv("room", "alice", 6002) as second:
            ended = await first.end()
            assert ended.status == OK
            assert "replaced" in ended.message
            await assert_silent(bob_stream, 0.3)  # the same connection: no second Join
            b = peer("room", "bob", 6001)
            reply = await bob.send(message(b, peer("room", "alice", 6002), "ack"))
            assert reply.status == OK
            assert kind(await second.next()) == "ack"


async def test_stream_ends_ok_before_the_clients_deadline(client: ClientFactory) -> None:
    alice = client("room", "alice")
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with alice.recv("room", "alice", 6101, headers={"grpc-timeout": "2S"}) as stream:
        ended = await stream.end(within=5)
    assert ended.status == OK
    assert "rotated" in ended.message
    assert 1.5 < loop.time() - started < 3.5  # the server ends it at 95 % of 2 s


async def test_idle_streams_get_pings(client: ClientFactory) -> None:
    async with client("room", "alice").recv("room", "alice", 6201) as stream:
        ping = await stream.next(3, pings=True)
    assert kind(ping) == "ping"
    assert not ping.msg.HasField("header")


async def test_stream_closes_when_the_token_expires(client: ClientFactory) -> None:
    alice = client("room", "alice", ttl=2)
    async with alice.recv("room", "alice", 6301) as stream:
        ended = await stream.end(within=5)
    assert ended.status == UNAUTHENTICATED
    assert "expired" in ended.message


async def test_send_rate_limit(client: ClientFactory) -> None:
    alice = client("room", "alice")
    a = peer("room", "alice", 6401)
    async with client("room", "bob").recv("room", "bob", 6402):
        statuses = [
            (await alice.send(message(a, peer("room", "bob"), "ack"))).status for _ in range(30)
        ]
    assert statuses[:20] == [OK] * 20  # the burst
    assert RESOURCE_EXHAUSTED in statuses[20:]
    # The bucket is the peer's: new connection ids (the client picks them) buy nothing more.
    rotated = [
        await alice.send(message(peer("room", "alice", conn), peer("room", "x"), "ack"))
        for conn in range(6410, 6420)
    ]
    assert {r.status for r in rotated} == {RESOURCE_EXHAUSTED}
    assert "peer room/alice sends faster than 5 messages/s" in rotated[0].message
    other_peer = await client("room", "carol").send(
        message(peer("room", "carol", 6403), peer("room", "x"), "ack")
    )
    assert other_peer.status == NOT_FOUND  # another peer has its own bucket


async def test_concurrent_streams_are_capped_per_project(
    server: RunningServer, client: ClientFactory, http: httpx.AsyncClient
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        for conn in range(7001, 7007):  # the module server allows 6 per project
            name = f"p{conn}"
            await stack.enter_async_context(client("room", name).recv("room", name, conn))
        async with client("room", "alice").recv("room", "alice", 7007) as refused:
            ended = await refused.end()
        assert ended.status == RESOURCE_EXHAUSTED
        assert "the project has 6 open streams, its limit of 6" in ended.message
        # Another project is not affected.
        other_project = await acreate_project(server)
        other = Client(http, server.grpc, other_project.token("room", "alice"))
        async with other.recv("room", "alice", 7008) as fine:
            with pytest.raises(TimeoutError):
                await fine.next(0.3)


async def test_a_dead_stream_frees_its_slot(client: ClientFactory) -> None:
    bob = client("room", "bob")
    async with bob.recv("room", "bob", 7101):
        pass
    await asyncio.sleep(0.2)
    reply = await client("room", "alice").send(
        message(peer("room", "alice", 7102), peer("room", "bob", 7101))
    )
    assert reply.status == NOT_FOUND


async def test_concurrent_streams_are_capped_per_peer(client: ClientFactory) -> None:
    bob = client("room", "bob")
    async with contextlib.AsyncExitStack() as stack:
        streams = [
            await stack.enter_async_context(bob.recv("room", "bob", conn))
            for conn in (7201, 7202, 7203)  # the module server allows 3 per peer
        ]
        refused = await bob.call("Recv", proto.RecvReq(src=peer("room", "bob", 7204)))
        assert refused.status == RESOURCE_EXHAUSTED
        assert "peer room/bob has 3 open streams, the limit per peer" in (refused.message)
        # Reopening a connection that is open replaces it, so it is not refused by the cap.
        async with bob.recv("room", "bob", 7203) as reopened:
            assert (await streams[2].end()).status == OK
            a = peer("room", "alice", 7205)
            reply = await client("room", "alice").send(message(a, peer("room", "bob", 7203)))
            assert reply.status == OK
            assert kind(await reopened.next()) == "join"
        # Another peer of the same project is not affected.
        async with client("room", "carol").recv("room", "carol", 7206) as carol:
            assert kind(await carol.next(3, pings=True)) == "ping"


async def test_recv_opens_are_rate_limited_per_peer(client: ClientFactory) -> None:
    bob = client("room", "bob")
    async with contextlib.AsyncExitStack() as stack:
        for conn in (7301, 7302, 7303):
            await stack.enter_async_context(bob.recv("room", "bob", conn))
        # Refused opens still spend the peer's budget (burst 8, 1/s), whatever the conn_id.
        replies = [
            await bob.call("Recv", proto.RecvReq(src=peer("room", "bob", conn)))
            for conn in range(7310, 7320)
        ]
    assert {r.status for r in replies} == {RESOURCE_EXHAUSTED}
    assert "the limit per peer" in replies[0].message
    limited = [r for r in replies if "faster than" in r.message]
    assert limited, [r.message for r in replies]
    assert "peer room/bob opens Recv streams faster than 1/s" in limited[0].message
