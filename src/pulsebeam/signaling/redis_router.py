"""Multi-node routing through Redis: presence with a TTL, node heartbeats, pub/sub delivery and
control events fanned out to every node.

Keys (``P``/``G``/``E`` = project, group, peer; all expire unless refreshed):

- ``pb:c:P:G:E:CONN`` -> ``<stream id>|<json>``: one live connection (node, policy, opened at);
- ``pb:p:P:G:E`` sorted set of the peer's conn ids by opening time (``conn_id 0`` -> newest);
- ``pb:g:P:G`` sorted set of ``E:CONN`` members (the ``Join`` broadcast);
- ``pb:s:P`` hash of node -> the node's open streams of the project (the cluster-wide cap);
- ``pb:n:NODE``: the node's heartbeat.

Each node subscribes to its own channel ``pb:node:NODE`` and to ``pb:events`` (control events).
A message for a stream travels as ``<stream id> NUL P:G:E:CONN NUL <payload>`` and is queued only
if that exact stream still holds the connection: the sender checked that stream's policy, and a
newer stream of the same connection may carry another token. Every ``presence_ttl / 3`` seconds a
node rewrites its node key and the presence of all its streams, so a dead node's entries vanish
within ``presence_ttl`` seconds, and after a Redis restart (data lost) the survivors restore theirs
at the next beat. The subscriber reconnects and resubscribes on its own; while Redis is down,
calls that need it answer UNAVAILABLE (the SDK retries those), and events missed meanwhile are
caught by the periodic reload of keys and bans from the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from pulsebeam.auth import PeerPolicy
from pulsebeam.control.events import ControlEvent, event_from_json, event_to_json
from pulsebeam.errors import ConfigError, UnavailableError
from pulsebeam.signaling.router import (
    EventHandler,
    Presence,
    StreamCounts,
    new_node_id,
    push_to_stream,
)
from pulsebeam.signaling.streams import Address, Hub, Stream

__all__ = ["RedisRouter"]

logger = logging.getLogger(__name__)

EVENTS_CHANNEL = b"pb:events"
_SEP = b"\x00"
_LOG_EVERY = 10.0  # seconds between logs of messages that could not be handled

# Delete a connection's presence only if it is still ours (a newer stream of the same connection,
# maybe on another node, may have replaced it).
_UNREGISTER = """
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, string.len(ARGV[1])) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[2])
  redis.call('ZREM', KEYS[3], ARGV[3])
  return 1
end
return 0
"""


# Open streams of a project (per node, live nodes only, pruning dead nodes' counts) and of a
# peer (its conn ids whose presence is still there).
_STREAM_COUNTS = """
local counts = redis.call('HGETALL', KEYS[1])
local project = 0
for i = 1, #counts, 2 do
  if redis.call('EXISTS', 'pb:n:' .. counts[i]) == 1 then
    project = project + tonumber(counts[i + 1])
  else
    redis.call('HDEL', KEYS[1], counts[i])
  end
end
local peer = 0
for _, conn in ipairs(redis.call('ZREVRANGE', KEYS[2], 0, -1)) do
  if redis.call('EXISTS', ARGV[1] .. conn) == 1 then
    peer = peer + 1
  end
end
return {project, peer}
"""


def _conn_prefix(project_id: str, group_id: str, peer_id: str) -> str:
    return f"pb:c:{project_id}:{group_id}:{peer_id}:"


def _conn_key(a: Address) -> str:
    return _conn_prefix(a.project_id, a.group_id, a.peer_id) + str(a.conn_id)


def _peer_key(a: Address) -> str:
    return f"pb:p:{a.project_id}:{a.group_id}:{a.peer_id}"


def _counts_key(project_id: str) -> str:
    return f"pb:s:{project_id}"


def _group_key(project_id: str, group_id: str) -> str:
    return f"pb:g:{project_id}:{group_id}"


def _node_channel(node_id: str) -> str:
    return f"pb:node:{node_id}"


@contextlib.asynccontextmanager
async def _redis_errors(what: str) -> AsyncIterator[None]:
    try:
        yield
    except (RedisError, OSError) as exc:
        raise UnavailableError(f"routing store (Redis) unavailable while {what}: retry") from exc


class RedisRouter:
    suspends = True

    def __init__(
        self,
        client: aioredis.Redis,
        hub: Hub,
        *,
        node_id: str | None = None,
        presence_ttl_secs: float = 6.0,
    ) -> None:
        self.node_id = node_id or new_node_id()
        self._client = client
        self._hub = hub
        self._ttl_ms = max(1000, int(presence_ttl_secs * 1000))
        self._beat_secs = presence_ttl_secs / 3
        self._channel = _node_channel(self.node_id).encode()
        self._unregister = client.register_script(_UNREGISTER)
        self._stream_counts = client.register_script(_STREAM_COUNTS)
        self._on_event: EventHandler | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._failures = 0
        self._failure_logged_at = float("-inf")
        self.subscribed = asyncio.Event()

    @classmethod
    async def connect(
        cls,
        url: str,
        hub: Hub,
        *,
        node_id: str | None = None,
        presence_ttl_secs: float = 6.0,
    ) -> RedisRouter:
        try:
            client = aioredis.from_url(url, socket_timeout=3, socket_connect_timeout=3)
        except ValueError as exc:
            raise ConfigError(f"setting --redis-url: {exc}") from None
        try:
            await client.ping()
        except (RedisError, OSError) as exc:
            await client.aclose()
            raise ConfigError(f"cannot reach Redis at --redis-url: {exc}") from None
        return cls(client, hub, node_id=node_id, presence_ttl_secs=presence_ttl_secs)

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self, on_event: EventHandler) -> None:
        self._on_event = on_event
        await self._beat()
        self._tasks = [
            asyncio.create_task(self._listen()),
            asyncio.create_task(self._heartbeat()),
        ]
        async with asyncio.timeout(10):
            await self.subscribed.wait()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(RedisError, OSError):
            await self._client.delete(f"pb:n:{self.node_id}")
            for stream in self._hub:
                await self._forget(stream)
        await self._client.aclose()

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self._beat_secs)
            try:
                await self._beat()
            except (RedisError, OSError) as exc:
                logger.warning("Redis heartbeat failed (%s); retrying", exc)

    async def _beat(self) -> None:
        """Refresh the node key and every local stream's presence (restores it after a restart)."""
        pipe = self._client.pipeline(transaction=False)
        pipe.set(f"pb:n:{self.node_id}", b"1", px=self._ttl_ms)
        for stream in self._hub:
            if stream.closed is None:
                self._write_presence(pipe, stream)
        for project_id in self._hub.projects():
            self._write_count(pipe, project_id)
        await pipe.execute()

    async def _listen(self) -> None:
        """Receive deliveries and events; reconnect and resubscribe whenever Redis goes away."""
        backoff = 0.1
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._channel, EVENTS_CHANNEL)
                if backoff > 0.1:  # reconnected: Redis may have lost our presence
                    await self._beat()
                    logger.info("Redis back: resubscribed and presence restored")
                self.subscribed.set()
                backoff = 0.1
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message["type"] == "message":
                        await self._dispatch_safely(message["channel"], message["data"])
            except (RedisError, OSError) as exc:
                self.subscribed.clear()
                # Close before waiting: a half-broken subscription that Redis still counts would
                # make publishers believe their message was delivered.
                await self._close_pubsub(pubsub)
                logger.warning("Redis subscription lost (%s); reconnecting in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0) if backoff > 0.1 else 0.2
            finally:
                await self._close_pubsub(pubsub)

    @staticmethod
    async def _close_pubsub(pubsub: Any) -> None:
        with contextlib.suppress(RedisError, OSError):
            await pubsub.aclose()

    async def _dispatch_safely(self, channel: bytes, data: bytes) -> None:
        """One bad message must not end the subscription (the node would silently stop hearing
        deliveries and revocations): log it, at most once per ``_LOG_EVERY`` seconds, go on.
        Dispatching never reads the subscription, so no error here is about the connection."""
        try:
            await self._dispatch(channel, data)
        except Exception as exc:
            self._failures += 1
            now = time.monotonic()
            if now - self._failure_logged_at >= _LOG_EVERY:
                self._failure_logged_at = now
                logger.warning(
                    "a message on %s could not be handled (%d so far), skipped: %s",
                    channel,
                    self._failures,
                    exc,
                    exc_info=not isinstance(exc, ValueError),  # a bug, not bad input: show where
                )

    async def _dispatch(self, channel: bytes, data: bytes) -> None:
        if channel == EVENTS_CHANNEL:
            try:
                event = event_from_json(data)
            except ValueError as exc:
                raise ValueError(f"malformed control event: {exc}") from None
            if self._on_event is not None:
                await self._on_event(event)
            return
        parts = data.split(_SEP, 2)
        if len(parts) != 3:
            raise ValueError("malformed delivery: no stream id and address")
        stream_id, key, payload = parts
        address = _parse_address(key)
        if address is not None:
            push_to_stream(self._hub, address, stream_id.decode("ascii", "replace"), payload)

    # -- presence ----------------------------------------------------------------------------------

    def _write_presence(self, pipe: Any, stream: Stream) -> None:
        a = stream.address
        value = json.dumps(
            {
                "n": self.node_id,
                "o": stream.opened_at,
                "g": stream.policy.group_id,
                "p": stream.policy.peer_id,
            },
            separators=(",", ":"),
        )
        pipe.set(_conn_key(a), f"{stream.stream_id}|{value}", px=self._ttl_ms)
        pipe.zadd(_peer_key(a), {str(a.conn_id): stream.opened_at})
        pipe.pexpire(_peer_key(a), self._ttl_ms)
        group = _group_key(a.project_id, a.group_id)
        pipe.zadd(group, {f"{a.peer_id}:{a.conn_id}": stream.opened_at})
        pipe.pexpire(group, self._ttl_ms)

    def _write_count(self, pipe: Any, project_id: str) -> None:
        key = _counts_key(project_id)
        count = self._hub.count(project_id)
        if count:
            pipe.hset(key, self.node_id, count)
            pipe.pexpire(key, self._ttl_ms)
        else:
            pipe.hdel(key, self.node_id)

    async def register(self, stream: Stream) -> Stream | None:
        replaced = self._hub.add(stream)
        pipe = self._client.pipeline(transaction=False)
        self._write_presence(pipe, stream)
        self._write_count(pipe, stream.address.project_id)
        try:
            async with _redis_errors("opening the stream"):
                await pipe.execute()
        except UnavailableError:
            self._hub.remove(stream)
            raise
        return replaced

    async def unregister(self, stream: Stream) -> None:
        if self._hub.remove(stream):
            try:
                await self._forget(stream)
            except (RedisError, OSError) as exc:
                logger.warning(
                    "could not remove %s from Redis (%s); it expires", stream.address, exc
                )

    async def _forget(self, stream: Stream) -> None:
        a = stream.address
        pipe = self._client.pipeline(transaction=False)  # one round trip for both
        await self._unregister(
            keys=[_conn_key(a), _peer_key(a), _group_key(a.project_id, a.group_id)],
            args=[f"{stream.stream_id}|", str(a.conn_id), f"{a.peer_id}:{a.conn_id}"],
            client=pipe,
        )
        self._write_count(pipe, a.project_id)
        await pipe.execute()

    async def stream_counts(self, project_id: str, group_id: str, peer_id: str) -> StreamCounts:
        peer = Address(project_id, group_id, peer_id, 0)
        async with _redis_errors("counting open streams"):
            project_count, peer_count = await self._stream_counts(
                keys=[_counts_key(project_id), _peer_key(peer)],
                args=[_conn_prefix(project_id, group_id, peer_id)],
            )
        return StreamCounts(int(project_count), int(peer_count))

    async def resolve(self, address: Address) -> Presence | None:
        async with _redis_errors("looking up a peer"):
            if address.conn_id != 0:
                value = await self._client.get(_conn_key(address))
                return None if value is None else _presence(address, value)
            members = await self._client.zrevrange(_peer_key(address), 0, -1)
            if not members:
                return None
            candidates = [
                Address(address.project_id, address.group_id, address.peer_id, int(_text(m)))
                for m in members
            ]
            found = await self._present(candidates)
            stale = [str(a.conn_id) for a, p in zip(candidates, found, strict=True) if p is None]
            if stale:
                await self._client.zrem(_peer_key(address), *stale)
            return next((p for p in found if p is not None), None)

    async def group(self, project_id: str, group_id: str) -> list[Presence]:
        async with _redis_errors("listing a group"):
            key = _group_key(project_id, group_id)
            members = await self._client.zrange(key, 0, -1)
            candidates = []
            for member in members:
                peer_id, _, conn = _text(member).rpartition(":")
                if conn.isdigit():
                    candidates.append(Address(project_id, group_id, peer_id, int(conn)))
            found = await self._present(candidates)
            stale = [
                f"{a.peer_id}:{a.conn_id}"
                for a, p in zip(candidates, found, strict=True)
                if p is None
            ]
            if stale:
                await self._client.zrem(key, *stale)
            return [p for p in found if p is not None]

    async def _present(self, addresses: Iterable[Address]) -> list[Presence | None]:
        addresses = list(addresses)
        if not addresses:
            return []
        values = await self._client.mget([_conn_key(a) for a in addresses])
        return [
            None if v is None else _presence(a, v) for a, v in zip(addresses, values, strict=True)
        ]

    # -- delivery and events -----------------------------------------------------------------------

    async def deliver(self, target: Presence, payload: bytes) -> bool:
        if target.node_id == self.node_id:
            return push_to_stream(self._hub, target.address, target.stream_id, payload)
        a = target.address
        key = f"{a.project_id}:{a.group_id}:{a.peer_id}:{a.conn_id}".encode()
        envelope = _SEP.join((target.stream_id.encode(), key, payload))
        async with _redis_errors("delivering a message"):
            receivers: int = await self._client.publish(_node_channel(target.node_id), envelope)
        return receivers > 0  # 0: the node is gone; its presence expires soon

    async def publish_event(self, event: ControlEvent) -> None:
        """Act here at once, then tell the other nodes (this node's own copy is a no-op)."""
        if self._on_event is not None:
            await self._on_event(event)
        async with _redis_errors("publishing a control event"):
            await self._client.publish(EVENTS_CHANNEL, event_to_json(event))


def _parse_address(key: bytes) -> Address | None:
    parts = key.decode("utf-8", "replace").rsplit(":", 3)
    if len(parts) != 4 or not parts[3].isdigit():
        return None
    return Address(parts[0], parts[1], parts[2], int(parts[3]))


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _presence(address: Address, raw: bytes | str) -> Presence | None:
    try:
        stream_id, _, value = _text(raw).partition("|")
        data: dict[str, Any] = json.loads(value)
        return Presence(
            address,
            PeerPolicy(data["g"], data["p"]),
            float(data["o"]),
            str(data["n"]),
            stream_id,
        )
    except (ValueError, KeyError, TypeError):
        logger.warning("ignored malformed presence for %s", address)
        return None
