"""Two real nodes routing through a real Redis: cross-node discovery and delivery, cross-node
revocation and bans, a node's death, and a Redis restart survived without restarting nodes."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pulsebeam import proto
from tests.fixtures.server import RunningServer, acreate_project, start_server
from tests.signaling.grpcweb_client import Client, StreamEnded, message, peer
from tests.signaling.redis_server import RedisServer, running_redis

pytestmark = [pytest.mark.slow, pytest.mark.redis]

OK, NOT_FOUND, PERMISSION_DENIED, RESOURCE_EXHAUSTED, UNAVAILABLE, UNAUTHENTICATED = (
    0,
    5,
    7,
    8,
    14,
    16,
)
TTL = 1.5


@contextlib.contextmanager
def two_nodes(
    tmp_path: Path, redis_url: str, *extra: str
) -> Iterator[tuple[RunningServer, RunningServer]]:
    args = ("--redis-url", redis_url, "--presence-ttl", str(TTL), "--ping-interval", "1", *extra)
    with (
        start_server(tmp_path / "data", *args, "--node-id", "node-a") as a,
        start_server(tmp_path / "data", *args, "--node-id", "node-b") as b,
    ):
        yield a, b


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with running_redis(tmp_path) as server:
        yield server


def kind(resp: proto.RecvResp) -> str | None:
    return resp.msg.payload.WhichOneof("payload_type")


async def test_cross_node_discovery_delivery_and_revocation(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    with two_nodes(tmp_path, redis_server.url) as (node_a, node_b):
        project = await acreate_project(node_a)
        async with httpx.AsyncClient(timeout=10) as http:
            alice = Client(http, node_a.grpc, project.token("room", "alice"))
            bob = Client(http, node_b.grpc, project.token("room", "bob"))
            mallory = Client(http, node_b.grpc, project.token("room", "mallory"))
            a, b = peer("room", "alice", 1001), peer("room", "bob", 2001)
            async with (
                bob.recv("room", "bob", 2001) as bob_stream,
                alice.recv("room", "alice", 1001) as alice_stream,
            ):
                join = await bob_stream.next()  # alice on A announced to bob on B
                assert kind(join) == "join"
                assert join.msg.header.src == a
                offer = message(a, peer("room", "bob", 0), "signal", generation_counter=1)
                offer.payload.signal.sdp.sdp = "v=0\r\n"
                assert (await alice.send(offer)).status == OK
                assert (await bob_stream.next()).msg == offer
                assert (await bob.send(message(b, a, "ack"))).status == OK
                assert kind(await alice_stream.next()) == "ack"
                # A ban made through node A closes mallory's stream on node B at once.
                async with mallory.recv("room", "mallory", 3001) as mallory_stream:
                    assert kind(await alice_stream.next()) == "join"
                    assert kind(await bob_stream.next()) == "join"
                    rest = f"{node_a.url}/api/v1/projects/{project.project_id}"
                    auth = {"authorization": f"Bearer {project.api_token}"}
                    ban = await http.post(
                        f"{rest}/bans", json={"peer_pattern": "mallory"}, headers=auth
                    )
                    assert ban.status_code == 201, ban.text
                    ended = await mallory_stream.end(within=1.0)
                    assert ended.status == PERMISSION_DENIED
                # Deleting the key through node A closes bob's stream on node B in < 1 s.
                loop = asyncio.get_running_loop()
                started = loop.time()
                deleted = await http.delete(f"{rest}/keys/{project.api_key}", headers=auth)
                assert deleted.status_code == 204
                ended = await bob_stream.end(within=2)
                assert ended.status == UNAUTHENTICATED
                assert loop.time() - started < 1.0
                assert (await alice_stream.end(within=2)).status == UNAUTHENTICATED
                refused = await bob.call("Prepare", proto.PrepareReq())
                assert refused.status == UNAUTHENTICATED


async def test_a_dead_nodes_presence_expires(tmp_path: Path, redis_server: RedisServer) -> None:
    with two_nodes(tmp_path, redis_server.url) as (node_a, node_b):
        project = await acreate_project(node_a)
        async with httpx.AsyncClient(timeout=10) as http:
            alice = Client(http, node_a.grpc, project.token("room", "alice"))
            bob = Client(http, node_b.grpc, project.token("room", "bob"))
            a = peer("room", "alice", 1001)
            async with bob.recv("room", "bob", 2001):
                assert (await alice.send(message(a, peer("room", "bob"), "ack"))).status == OK
                node_b.process.send_signal(signal.SIGKILL)  # no goodbye: presence must expire
                node_b.process.wait(timeout=5)
            # Delivery to a dead node fails at once (nobody subscribed to its channel) ...
            reply = await alice.send(message(a, peer("room", "bob"), "ack"))
            assert reply.status == NOT_FOUND
            # ... and its presence is gone from Redis within the TTL.
            client = redis_server.client()
            try:
                for _ in range(int(TTL * 20) + 20):
                    if not client.exists("pb:n:node-b") and not client.keys("pb:c:*:bob:*"):
                        break
                    await asyncio.sleep(0.1)
                assert not client.exists("pb:n:node-b")
                assert client.keys("pb:c:*:bob:*") == []
                assert client.exists("pb:n:node-a")
            finally:
                client.close()


async def test_nodes_survive_a_redis_restart(tmp_path: Path, redis_server: RedisServer) -> None:
    with two_nodes(tmp_path, redis_server.url) as (node_a, node_b):
        project = await acreate_project(node_a)
        async with httpx.AsyncClient(timeout=10) as http:
            alice = Client(http, node_a.grpc, project.token("room", "alice"))
            bob = Client(http, node_b.grpc, project.token("room", "bob"))
            a = peer("room", "alice", 1001)
            async with bob.recv("room", "bob", 2001) as bob_stream:
                assert (await alice.send(message(a, peer("room", "bob"), "ack"))).status == OK
                assert kind(await bob_stream.next()) == "ack"
                redis_server.stop()
                down = await alice.send(message(a, peer("room", "bob"), "ack"))
                assert down.status == UNAVAILABLE  # retryable for the SDK
                assert "Redis" in down.message
                redis_server.start()  # empty: all presence was lost
                status = down.status
                for _ in range(100):  # heartbeats restore presence, subscribers reconnect
                    status = (await alice.send(message(a, peer("room", "bob"), "bye"))).status
                    if status == OK:
                        break
                    await asyncio.sleep(0.1)
                assert status == OK
                assert kind(await bob_stream.next(3)) == "bye"
                # New streams after the restart are announced across nodes again.
                async with alice.recv("room", "alice", 1001):
                    assert kind(await bob_stream.next(3)) == "join"
        assert node_a.process.poll() is None
        assert node_b.process.poll() is None


async def test_a_failed_join_broadcast_neither_fails_recv_nor_leaks_its_stream(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    # A Redis user allowed everything but ZRANGE: registering a stream works, listing its group
    # for the Join broadcast fails. The Recv must still open, and each stream must be gone once
    # closed (a ghost would count toward the project's cap of 2 and refuse the third Recv).
    admin = redis_server.client()
    try:
        admin.execute_command("ACL", "SETUSER", "pb", "on", ">pw", "~*", "&*", "+@all", "-zrange")
    finally:
        admin.close()
    url = f"redis://pb:pw@127.0.0.1:{redis_server.port}/0"
    with start_server(tmp_path, "--redis-url", url, "--max-project-streams", "2") as node:
        project = await acreate_project(node)
        async with httpx.AsyncClient(timeout=10) as http:
            alice = Client(http, node.grpc, project.token("room", "alice"))
            for conn in range(3001, 3006):
                name = f"p{conn}"
                callee = Client(http, node.grpc, project.token("room", name))
                async with callee.recv("room", name, conn) as stream:
                    to_callee = message(
                        peer("room", "alice", 1001), peer("room", name, conn), "ack"
                    )
                    assert (await alice.send(to_callee)).status == OK, name
                    assert kind(await stream.next()) == "ack"
        assert "not broadcast: group lookup failed" in node.log()


async def open_status(client: Client, group: str, peer_id: str, conn: int) -> int:
    """OK if a Recv opens (a ping arrives), else the status it ended with."""
    async with client.recv(group, peer_id, conn) as stream:
        try:
            await stream.next(1.5, pings=True)
        except StreamEnded as ended:
            return ended.status
    return OK


async def test_stream_caps_hold_across_nodes(tmp_path: Path, redis_server: RedisServer) -> None:
    caps = ("--max-project-streams", "3", "--max-streams-per-peer", "2")
    with two_nodes(tmp_path, redis_server.url, *caps) as (node_a, node_b):
        project = await acreate_project(node_a)
        async with httpx.AsyncClient(timeout=10) as http:
            alice_a = Client(http, node_a.grpc, project.token("room", "alice"))
            alice_b = Client(http, node_b.grpc, project.token("room", "alice"))
            bob = Client(http, node_b.grpc, project.token("room", "bob"))
            carol = Client(http, node_b.grpc, project.token("room", "carol"))
            async with (
                alice_a.recv("room", "alice", 1001) as first,
                alice_a.recv("room", "alice", 1002) as second,
            ):
                await first.next(pings=True)  # both open (a ping within the interval)
                await second.next(pings=True)
                async with alice_b.recv("room", "alice", 1003) as third:
                    refused = await third.end()
                assert refused.status == RESOURCE_EXHAUSTED  # the peer's 2, counted on A
                assert "limit per peer" in refused.message
                async with bob.recv("room", "bob", 2001) as bobs:
                    await bobs.next(pings=True)  # the project's third stream
                    async with carol.recv("room", "carol", 3001) as carols:
                        refused = await carols.end()
                    assert refused.status == RESOURCE_EXHAUSTED
                    assert "its limit of 3" in refused.message
                    node_a.process.send_signal(signal.SIGKILL)  # alice's two streams die with A
                    node_a.process.wait(timeout=5)
                    # Once A's heartbeat expires its count no longer holds carol back.
                    statuses = []
                    for _ in range(int(TTL * 20) + 20):
                        statuses.append(await open_status(carol, "room", "carol", 3001))
                        if statuses[-1] == OK:
                            break
                        await asyncio.sleep(0.1)
                    assert statuses[-1] == OK, "a dead node's streams still count"
                    assert set(statuses[:-1]) <= {RESOURCE_EXHAUSTED}
