"""The open ``Recv`` streams of this node: one bounded queue each, and the registry that finds,
replaces and closes them.

Overflow policy: a stream holds at most ``queue_limit`` undelivered messages. A receiver that
falls further behind (it stopped reading, or reads slower than it is sent to) is ended with
RESOURCE_EXHAUSTED and its queue freed; the SDK reopens ``Recv`` (the status is retryable) and its
end-to-end reliability (``seqnum``/``Ack``) resends what was lost. So one slow receiver costs the
server at most ``queue_limit`` messages of ``max_message_bytes`` each, and never slows the senders.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from pulsebeam.auth import PeerPolicy
from pulsebeam.errors import GrpcStatus

__all__ = ["Address", "Closed", "Hub", "Stream"]

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


@dataclass(eq=False, slots=True)
class Stream:
    """A live ``Recv`` stream: who holds it, under which token, and its outgoing queue."""

    address: Address
    key_id: str
    policy: PeerPolicy
    expires_at: float
    queue_limit: int
    opened_at: float = field(default_factory=time.time)
    stream_id: str = field(default_factory=lambda: secrets.token_hex(8))
    closed: Closed | None = None
    _queue: collections.deque[bytes] = field(default_factory=collections.deque)
    # A future only while the stream's writer waits (an Event per idle stream costs more).
    _waiter: asyncio.Future[None] | None = None

    def push(self, payload: bytes) -> bool:
        """Queue one encoded ``RecvResp``; False if the stream is closed (or just overflowed)."""
        if self.closed is not None:
            return False
        if len(self._queue) >= self.queue_limit:
            self._queue.clear()
            self.close(
                GrpcStatus.RESOURCE_EXHAUSTED,
                f"receiver fell {self.queue_limit} messages behind; reopen Recv",
            )
            logger.warning("stream %s overflowed and was closed", self.address)
            return False
        self._queue.append(payload)
        self._wake()
        return True

    def close(self, status: GrpcStatus, message: str) -> None:
        if self.closed is None:
            self.closed = Closed(status, message)
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next(self, wait_secs: float) -> bytes | None:
        """The next queued message, or None after ``wait_secs`` seconds or when closed."""
        if not self._queue and self.closed is None:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(max(wait_secs, 0.0)):
                    await self._waiter
            except TimeoutError:
                return None
            finally:
                self._waiter = None
        if self.closed is not None or not self._queue:
            return None
        return self._queue.popleft()

    @property
    def queued(self) -> int:
        return len(self._queue)


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
