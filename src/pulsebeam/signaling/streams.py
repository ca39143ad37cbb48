"""The open ``Recv`` streams of this node, and the registry that finds, replaces and closes them.

A stream pushes: a sender's ``Send`` hands the encoded message to the receiving stream, which
writes it straight to its transport (a :class:`StreamSink`), with no task or queue per stream
on the way. One clock per node (:class:`StreamClock`) sends the keepalive ``Ping`` and ends
streams at token expiry and at rotation; a quiet stream is a few hundred bytes of Python objects.

Overflow policy: while a sink cannot take more (its socket buffer is full, the client does not
read), the stream keeps at most ``queue_limit`` undelivered messages. A receiver that falls
further behind is ended with RESOURCE_EXHAUSTED and its backlog freed; the SDK reopens ``Recv``
(the status is retryable) and its end-to-end reliability (``seqnum``/``Ack``) resends what was
lost. So one slow receiver costs the server at most ``queue_limit`` messages of
``max_message_bytes`` each, and never slows the senders.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import logging
import math
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from pulsebeam.auth import PeerPolicy
from pulsebeam.errors import GrpcStatus

__all__ = ["Address", "Closed", "Hub", "Stream", "StreamClock", "StreamSink", "StreamTimes"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Address:
    """One connection of one peer of one project."""

    project_id: str
    group_id: str
    peer_id: str
    conn_id: int

    def __str__(self) -> str:
        return f"{self.group_id}/{self.peer_id}/{self.conn_id}"


@dataclass(frozen=True, slots=True)
class Closed:
    """Why a stream ended: the status and message of its trailers."""

    status: GrpcStatus
    message: str


class StreamSink(Protocol):
    """Where a stream's messages go: the response of one ``Recv`` call."""

    @property
    def ready(self) -> bool:
        """True while the transport takes more without buffering (false before its headers are
        out and while its socket is full); the sink calls :meth:`Stream.drain` when it is again."""

    def write(self, payload: bytes) -> None:
        """Send one encoded ``RecvResp``."""

    def end(self, closed: Closed) -> None:
        """Finish the response with these trailers (the client may be gone already)."""


@dataclass(frozen=True, slots=True)
class StreamTimes:
    """When a started stream pings and ends, in seconds from its start."""

    ping_interval: float
    expires_in: float
    max_age: float


class StreamClock:
    """One timer for all of a node's streams, in slots of :attr:`resolution` seconds.

    Why not ``loop.call_later`` per stream: a timer handle costs more memory than the rest of an
    idle stream's own state, and traffic would re-arm it on every message. Here a stream sits in
    the slot of its next due time (ping, expiry or rotation: at most a ping interval away) and
    re-schedules itself when that slot comes up, so traffic costs nothing.
    """

    def __init__(self, resolution: float = 0.25) -> None:
        self.resolution = resolution
        self._slots: dict[int, list[Stream]] = {}
        self._order: list[int] = []  # heap of the keys of _slots
        self._armed: tuple[int, asyncio.TimerHandle] | None = None

    def __len__(self) -> int:
        """How many stream entries wait for their slot (ended streams until their slot comes)."""
        return sum(len(members) for members in self._slots.values())

    def schedule(self, stream: Stream, due: float) -> None:
        """Call ``stream.tick()`` at ``due`` (``time.monotonic()``), rounded up to a slot."""
        slot = math.ceil(due / self.resolution)
        members = self._slots.get(slot)
        if members is None:
            members = self._slots[slot] = []
            heapq.heappush(self._order, slot)
        members.append(stream)
        if self._armed is None or slot < self._armed[0]:
            self._arm(slot)

    def _arm(self, slot: int) -> None:
        if self._armed is not None:
            self._armed[1].cancel()
        delay = max(slot * self.resolution - time.monotonic(), 0.0)
        self._armed = (slot, asyncio.get_running_loop().call_later(delay, self._run))

    def _run(self) -> None:
        self._armed = None
        now_slot = math.floor(time.monotonic() / self.resolution)
        order = self._order
        while order and order[0] <= now_slot:
            for stream in self._slots.pop(heapq.heappop(order)):
                stream.tick()  # may schedule it again, into a later slot
        if order:
            self._arm(order[0])


@dataclass(eq=False, slots=True)
class Stream:
    """A live ``Recv`` stream: who holds it, under which token, and where its messages go."""

    address: Address
    key_id: str
    policy: PeerPolicy
    expires_at: float
    queue_limit: int
    opened_at: float = field(default_factory=time.time)
    stream_id: str = field(default_factory=lambda: secrets.token_hex(8))
    closed: Closed | None = None
    _sink: StreamSink | None = None
    # Messages the sink could not take yet; allocated only when needed (memory per idle stream).
    _backlog: collections.deque[bytes] | None = None
    _on_end: Callable[[Stream], None] | None = None
    _clock: StreamClock | None = None
    _ping: bytes = b""
    _times: StreamTimes | None = None
    _started: float = 0.0  # time.monotonic() at start
    _last_write: float = 0.0

    def start(
        self,
        sink: StreamSink,
        times: StreamTimes,
        *,
        clock: StreamClock,
        ping: bytes,
        on_end: Callable[[Stream], None],
    ) -> None:
        """Attach the transport and join the clock; ``on_end`` runs once when the stream ends."""
        self._sink = sink
        self._on_end = on_end
        self._ping = ping
        self._times = times
        self._clock = clock
        self._started = self._last_write = time.monotonic()
        if self.closed is not None:  # revoked or replaced while it was being opened
            self._finish(self.closed)
            return
        self._schedule()
        self.drain()

    def push(self, payload: bytes) -> bool:
        """Hand over one encoded ``RecvResp``; False if the stream is closed (or overflowed)."""
        if self.closed is not None:
            return False
        sink = self._sink
        if sink is not None and not self._backlog and sink.ready:
            sink.write(payload)
            self._last_write = time.monotonic()
            return True
        backlog = self._backlog
        if backlog is None:
            backlog = self._backlog = collections.deque()
        if len(backlog) >= self.queue_limit:
            self.close(
                GrpcStatus.RESOURCE_EXHAUSTED,
                f"receiver fell {self.queue_limit} messages behind; reopen Recv",
            )
            logger.warning("stream %s overflowed and was closed", self.address)
            return False
        backlog.append(payload)
        return True

    def drain(self) -> None:
        """Write what the sink could not take before; its transport calls this when ready."""
        sink, backlog = self._sink, self._backlog
        if sink is None or not backlog:
            return
        while backlog and sink.ready and self.closed is None:
            sink.write(backlog.popleft())
            self._last_write = time.monotonic()

    def close(self, status: GrpcStatus, message: str) -> None:
        if self.closed is None:
            self.closed = Closed(status, message)
            self._backlog = None
            if self._sink is not None:
                self._finish(self.closed)

    def _finish(self, closed: Closed) -> None:
        sink, self._sink = self._sink, None  # the clock may hold an ended stream a while
        if sink is not None:
            sink.end(closed)
        on_end, self._on_end = self._on_end, None
        if on_end is not None:
            on_end(self)

    def _schedule(self) -> None:
        times, clock = self._times, self._clock
        assert times is not None
        assert clock is not None
        started = self._started
        due = min(
            started + times.expires_in,
            started + times.max_age,
            self._last_write + times.ping_interval,
        )
        clock.schedule(self, due)

    def tick(self) -> None:
        """The clock's call: ping if idle for an interval, end at expiry or rotation."""
        times = self._times
        if self.closed is not None or times is None:
            return  # ended since it was scheduled: the clock just lets go of it
        now = time.monotonic()
        if now >= self._started + times.expires_in:
            self.close(GrpcStatus.UNAUTHENTICATED, "token expired: mint a new one, reopen Recv")
        elif now >= self._started + times.max_age:
            self.close(GrpcStatus.OK, "stream rotated: reopen Recv")
        else:
            if now >= self._last_write + times.ping_interval:
                self.push(self._ping)
                self._last_write = now  # also while backlogged: one ping per interval at most
            if self.closed is None:
                self._schedule()

    @property
    def queued(self) -> int:
        return len(self._backlog) if self._backlog is not None else 0


class Hub:
    """This node's streams by address, by group and by project (all in memory)."""

    def __init__(self) -> None:
        self._streams: dict[Address, Stream] = {}
        self._groups: dict[tuple[str, str], set[Address]] = {}
        self._per_project: collections.Counter[str] = collections.Counter()
        self._per_peer: collections.Counter[tuple[str, str, str]] = collections.Counter()

    def __len__(self) -> int:
        return len(self._streams)

    def __iter__(self) -> Iterator[Stream]:
        return iter(list(self._streams.values()))

    def count(self, project_id: str) -> int:
        return self._per_project[project_id]

    def projects(self) -> list[str]:
        """The projects with open streams on this node."""
        return list(self._per_project)

    def count_peer(self, project_id: str, group_id: str, peer_id: str) -> int:
        return self._per_peer[(project_id, group_id, peer_id)]

    def get(self, address: Address) -> Stream | None:
        return self._streams.get(address)

    def add(self, stream: Stream) -> Stream | None:
        """Register ``stream``; returns the stream it replaces (same connection), now closed."""
        address = stream.address
        old = self._streams.get(address)
        if old is not None:
            old.close(GrpcStatus.OK, "replaced by a newer Recv of the same connection")
        else:
            self._per_project[address.project_id] += 1
            self._per_peer[_peer_key(address)] += 1
            self._groups.setdefault((address.project_id, address.group_id), set()).add(address)
        self._streams[address] = stream
        return old

    def remove(self, stream: Stream) -> bool:
        """Forget ``stream`` unless it was already replaced; True if it was the current one."""
        address = stream.address
        if self._streams.get(address) is not stream:
            return False
        del self._streams[address]
        group_key = (address.project_id, address.group_id)
        members = self._groups[group_key]
        members.discard(address)
        if not members:
            del self._groups[group_key]
        self._per_project[address.project_id] -= 1
        if self._per_project[address.project_id] <= 0:
            del self._per_project[address.project_id]
        peer = _peer_key(address)
        self._per_peer[peer] -= 1
        if self._per_peer[peer] <= 0:
            del self._per_peer[peer]
        return True

    def group(self, project_id: str, group_id: str) -> list[Stream]:
        return [self._streams[a] for a in self._groups.get((project_id, group_id), ())]

    def newest(self, project_id: str, group_id: str, peer_id: str) -> Stream | None:
        """The peer's newest open stream (a closed one may linger until its writer unregisters)."""
        candidates = [
            s
            for s in self.group(project_id, group_id)
            if s.address.peer_id == peer_id and s.closed is None
        ]
        return max(candidates, key=lambda s: s.opened_at, default=None)

    def close_where(
        self, predicate: Callable[[Stream], bool], status: GrpcStatus, message: str
    ) -> int:
        """Close every stream matching ``predicate``; returns how many."""
        closed = 0
        for stream in list(self._streams.values()):
            if stream.closed is None and predicate(stream):
                stream.close(status, message)
                closed += 1
        return closed


def _peer_key(address: Address) -> tuple[str, str, str]:
    return (address.project_id, address.group_id, address.peer_id)
