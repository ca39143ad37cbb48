"""Where a message goes: the ``Router`` interface and its in-process implementation.

The service never asks *where* a peer is: it resolves an address to a :class:`Presence` and asks
the router to deliver there. One node keeps presence in its :class:`~.streams.Hub`; many nodes
share it through Redis (:mod:`.redis_router`). Picking one is a single switch in the server's
factory (``--redis-url``). Control events (key deleted, ban added/removed) also travel through the
router, so that every node acts on them.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from pulsebeam.auth import PeerPolicy
from pulsebeam.control.events import ControlEvent
from pulsebeam.signaling.streams import Address, Hub, Stream

__all__ = [
    "EventHandler",
    "LocalRouter",
    "Presence",
    "Router",
    "StreamCounts",
    "new_node_id",
    "push_to_stream",
]

logger = logging.getLogger(__name__)

EventHandler = Callable[[ControlEvent], Awaitable[None]]


def new_node_id() -> str:
    return "node-" + secrets.token_hex(4)


@dataclass(frozen=True, slots=True)
class StreamCounts:
    project: int
    peer: int


@dataclass(frozen=True, slots=True)
class Presence:
    """A live connection somewhere in the cluster, with what delivery needs to know about it."""

    address: Address
    policy: PeerPolicy
    opened_at: float
    node_id: str
    stream_id: str

    @classmethod
    def of(cls, stream: Stream, node_id: str) -> Presence:
        return cls(stream.address, stream.policy, stream.opened_at, node_id, stream.stream_id)


def push_to_stream(hub: Hub, address: Address, stream_id: str, payload: bytes) -> bool:
    """Queue ``payload`` on this node's stream at ``address`` only if it is still the stream
    ``stream_id`` that the sender resolved and policy-checked; False otherwise."""
    stream = hub.get(address)
    return stream is not None and stream.stream_id == stream_id and stream.push(payload)


class Router(Protocol):
    node_id: str
    suspends: bool
    """Whether its methods may wait on I/O. Calls through a router that never does (in-process)
    are run inline by the HTTP/1.1 fast path, without a task per call (:mod:`.http1`)."""

    async def start(self, on_event: EventHandler) -> None:
        """Begin receiving control events (and remote deliveries); ``on_event`` runs per event."""

    async def close(self) -> None: ...

    async def register(self, stream: Stream) -> Stream | None:
        """Make ``stream`` reachable; returns the local stream it replaced (same connection)."""

    async def unregister(self, stream: Stream) -> None:
        """Forget ``stream`` unless a newer stream of the same connection replaced it."""

    async def resolve(self, address: Address) -> Presence | None:
        """The live connection at ``address``; ``conn_id`` 0 means the peer's newest one."""

    async def group(self, project_id: str, group_id: str) -> list[Presence]:
        """Every live connection of a group (for the ``Join`` broadcast)."""

    async def stream_counts(self, project_id: str, group_id: str, peer_id: str) -> StreamCounts:
        """Open streams of the project and of the peer, on every node (the per-project and
        per-peer caps hold for the cluster, not per node)."""

    async def deliver(self, target: Presence, payload: bytes) -> bool:
        """Queue an encoded ``RecvResp`` on the target's stream; False if it is gone.

        Only the very stream that was resolved (``target.stream_id``) gets it: the policy check
        was made against that stream's token, and a newer stream of the same connection may hold
        another token and policy. A message that finds a newer stream is dropped (the SDK resends
        reliable signals)."""

    async def publish_event(self, event: ControlEvent) -> None:
        """Run ``event`` on every node, this one included."""


class LocalRouter:
    """Single-node routing: presence is this process's hub."""

    suspends = False

    def __init__(self, hub: Hub, node_id: str | None = None) -> None:
        self.node_id = node_id or new_node_id()
        self._hub = hub
        self._on_event: EventHandler | None = None

    async def start(self, on_event: EventHandler) -> None:
        self._on_event = on_event

    async def close(self) -> None:
        self._on_event = None

    async def register(self, stream: Stream) -> Stream | None:
        return self._hub.add(stream)

    async def unregister(self, stream: Stream) -> None:
        self._hub.remove(stream)

    async def resolve(self, address: Address) -> Presence | None:
        hub = self._hub
        if address.conn_id == 0:
            stream = hub.newest(address.project_id, address.group_id, address.peer_id)
        else:
            stream = hub.get(address)
        if stream is None or stream.closed is not None:
            return None
        return Presence.of(stream, self.node_id)

    async def group(self, project_id: str, group_id: str) -> list[Presence]:
        return [
            Presence.of(s, self.node_id)
            for s in self._hub.group(project_id, group_id)
            if s.closed is None
        ]

    async def stream_counts(self, project_id: str, group_id: str, peer_id: str) -> StreamCounts:
        hub = self._hub
        return StreamCounts(hub.count(project_id), hub.count_peer(project_id, group_id, peer_id))

    async def deliver(self, target: Presence, payload: bytes) -> bool:
        return push_to_stream(self._hub, target.address, target.stream_id, payload)

    async def publish_event(self, event: ControlEvent) -> None:
        if self._on_event is None:
            logger.warning("control event %s dropped: router not started", type(event).__name__)
            return
        await self._on_event(event)
