"""Delivery reaches only the stream whose policy the sender checked, in-process and through a
real Redis; and one bad message on Redis does not stop a node from hearing the next ones."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from pulsebeam.auth import PeerPolicy
from pulsebeam.control.events import BanAdded, ControlEvent, KeyDeleted, event_to_json
from pulsebeam.signaling.redis_router import RedisRouter
from pulsebeam.signaling.router import LocalRouter, Presence
from pulsebeam.signaling.streams import Address, Hub, Stream
from tests.signaling.redis_server import RedisServer, running_redis
from tests.signaling.sinks import RecordingSink, start

BOB = Address("prj_a", "g", "bob", 4242)


def _stream(policy: str) -> tuple[Stream, RecordingSink]:
    group, _, peer = policy.partition(":")
    stream = Stream(BOB, "kid_0000000000000000", PeerPolicy(group, peer), time.time() + 3600, 16)
    sink = RecordingSink()
    start(stream, sink)
    return stream, sink


async def test_local_delivery_skips_a_newer_stream_of_the_same_connection() -> None:
    router = LocalRouter(Hub())
    first, _ = _stream("*:*")
    await router.register(first)
    checked = await router.resolve(BOB)  # the sender checks this stream's policy ...
    assert checked is not None
    assert checked.policy.allows("g", "alice")
    second, sink = _stream("g:carol")  # ... then bob reopens with a token that excludes alice
    await router.register(second)
    assert not await router.deliver(checked, b"from alice")
    assert sink.take() == []
    current = await router.resolve(BOB)
    assert current is not None
    assert current.stream_id == second.stream_id
    assert await router.deliver(current, b"checked against the new policy")
    assert sink.take() == [b"checked against the new policy"]


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with running_redis(tmp_path) as server:
        yield server


class Events:
    """An event handler that records what it gets and fails on the events it is told to."""

    def __init__(self) -> None:
        self.seen: asyncio.Queue[ControlEvent] = asyncio.Queue()
        self.fail_on: set[ControlEvent] = set()

    async def __call__(self, event: ControlEvent) -> None:
        if event in self.fail_on:
            raise RuntimeError(f"handler failed on {event}")
        self.seen.put_nowait(event)

    async def next(self) -> ControlEvent:
        async with asyncio.timeout(5):
            return await self.seen.get()


@pytest.fixture
async def nodes(
    redis_server: RedisServer,
) -> AsyncIterator[tuple[RedisRouter, RedisRouter, Events]]:
    events = Events()
    one = await RedisRouter.connect(redis_server.url, Hub(), node_id="n1")
    two = await RedisRouter.connect(redis_server.url, Hub(), node_id="n2")
    try:
        await one.start(events)
        await two.start(Events())
        yield one, two, events
    finally:
        await one.close()
        await two.close()


@pytest.mark.redis
async def test_redis_delivery_skips_a_newer_stream_of_the_same_connection(
    nodes: tuple[RedisRouter, RedisRouter, Events],
) -> None:
    one, two, _ = nodes
    first, _ = _stream("*:*")
    await two.register(first)
    checked = await one.resolve(BOB)
    assert checked is not None
    assert (checked.node_id, checked.stream_id) == ("n2", first.stream_id)
    second, sink = _stream("g:carol")
    await two.register(second)
    await one.deliver(checked, b"from alice")  # published, dropped by n2
    current = await one.resolve(BOB)
    assert current is not None
    assert current.stream_id == second.stream_id
    assert await one.deliver(current, b"checked against the new policy")
    # Same channel, so in order: had the first one been queued, it would come out first.
    assert await sink.next() == b"checked against the new policy"
    assert sink.take() == []
    # The node's own streams follow the same rule.
    assert not await two.deliver(checked, b"local, stale")
    assert await two.deliver(current, b"local, current")
    assert await sink.next() == b"local, current"


@pytest.mark.redis
async def test_bad_messages_on_redis_do_not_stop_the_node_listening(
    nodes: tuple[RedisRouter, RedisRouter, Events], redis_server: RedisServer
) -> None:
    one, _, events = nodes
    stream, sink = _stream("*:*")
    await one.register(stream)
    failing = KeyDeleted("kid_00000000000000aa", "prj_a")
    events.fail_on.add(failing)
    client = redis_server.client()
    try:
        for bad in (
            b"not json",
            b'{"type":"BanAdded","ban_id":"b","project_id":"p","group_pattern":7,'
            b'"peer_pattern":"x"}',
            event_to_json(failing).encode(),  # valid, but its handler raises
        ):
            client.publish("pb:events", bad)
        client.publish("pb:node:n1", b"no separators at all")
        good = BanAdded("ban_1", "prj_a", "*", "mallory", "2030-01-01T00:00:00+00:00")
        client.publish("pb:events", event_to_json(good))
    finally:
        client.close()
    assert await events.next() == good
    assert events.seen.empty()
    target = await one.resolve(BOB)
    assert isinstance(target, Presence)
    # Deliveries still arrive, through Redis, from another node's point of view.
    two = nodes[1]
    assert await two.deliver(target, b"still listening")
    assert await sink.next() == b"still listening"
