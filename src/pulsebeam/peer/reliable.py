"""A session's ``seqnum``s: numbering and ordered sending out, de-duplication in.

Out: every message of a session gets the next ``seqnum`` (from 0, wrapping like a uint32) and
they are sent one at a time, so the other side receives them in that order. In: a retried
``Send`` may arrive twice; a window of the highest seqnum seen plus a bounded set below it drops
repeats of reliable messages, with constant memory however long the session lives (a seqnum far
behind the window counts as already seen).
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from pulsebeam.peer.identity import PeerInfo
from pulsebeam.proto import Message, MessageHeader, MessagePayload

__all__ = ["Outbox", "Sender", "SeqnumWindow"]

_MODULUS = 2**32


class Sender(Protocol):
    @property
    def info(self) -> PeerInfo: ...

    async def send_message(self, message: Message, *, bye: bool = False) -> None: ...


class Outbox:
    """The messages from ``sender`` to ``other``, numbered and sent in order by :meth:`run`."""

    def __init__(self, sender: Sender, other: PeerInfo) -> None:
        self._sender = sender
        self._src = sender.info.to_proto()
        self._dst = other.to_proto()
        self._next_seqnum = 0
        self._queue: asyncio.Queue[Message] = asyncio.Queue()

    def message(self, payload: MessagePayload, *, reliable: bool) -> Message:
        """The next message, numbered (for one sent directly, such as a ``Bye``)."""
        header = MessageHeader(
            src=self._src, dst=self._dst, seqnum=self._next_seqnum, reliable=reliable
        )
        self._next_seqnum = (self._next_seqnum + 1) % _MODULUS
        return Message(header=header, payload=payload)

    def put(self, payload: MessagePayload, *, reliable: bool) -> None:
        self._queue.put_nowait(self.message(payload, reliable=reliable))

    async def run(self) -> None:
        """Send queued messages one at a time, forever; raises what a send raises."""
        while True:
            await self._sender.send_message(await self._queue.get())


class SeqnumWindow:
    """``add(seqnum)`` is True the first time a seqnum is seen, False for a repeat."""

    def __init__(self, size: int = 1024) -> None:
        if size <= 0:
            raise ValueError(f"window size must be positive, got {size}")
        self._size = size
        self._highest: int | None = None
        self._seen: set[int] = set()

    def add(self, seqnum: int) -> bool:
        if self._highest is None:
            self._highest = seqnum
            self._seen.add(seqnum)
            return True
        # Distance forward from the highest, modulo 2**32 (seqnums wrap like uint32).
        ahead = (seqnum - self._highest) % _MODULUS
        if 0 < ahead < _MODULUS // 2:
            self._highest = seqnum
            self._seen.add(seqnum)
            floor = (seqnum - self._size) % _MODULUS
            self._seen = {s for s in self._seen if (s - floor) % _MODULUS <= self._size}
            return True
        behind = (self._highest - seqnum) % _MODULUS
        if behind >= self._size or seqnum in self._seen:
            return False
        self._seen.add(seqnum)
        return True
