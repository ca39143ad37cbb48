"""A data channel in the SDK's one idiom: ``await ch.wait_open()``, ``async for msg in ch``.

It wraps an aiortc ``RTCDataChannel`` (still reachable as ``.channel``) and subscribes to its
events at once, so no message that arrives before the application iterates is lost (they are
queued without bound: read them, or close the channel).
"""

from __future__ import annotations

import asyncio

from aiortc import RTCDataChannel

from pulsebeam.peer.errors import PeerClosedError
from pulsebeam.peer.events import EventStream, first_of

__all__ = ["DataChannel"]

Data = str | bytes


class DataChannel:
    def __init__(self, channel: RTCDataChannel) -> None:
        self.channel = channel
        self._messages: EventStream[Data] = EventStream()
        self._opened = asyncio.Event()
        self._closed = asyncio.Event()
        if channel.readyState == "open":
            self._opened.set()
        channel.on("open", self._opened.set)
        channel.on("message", self._messages.put)
        channel.on("close", self._on_close)

    def _on_close(self) -> None:
        self._closed.set()
        self._messages.close()

    @property
    def label(self) -> str:
        return self.channel.label

    @property
    def ready_state(self) -> str:
        return self.channel.readyState

    @property
    def buffered_amount(self) -> int:
        return self.channel.bufferedAmount

    async def wait_open(self) -> None:
        """Return once the channel is open; raises if it closes first (bound it with a timeout)."""
        await first_of(self._opened, self._closed)
        if not self._opened.is_set():
            raise PeerClosedError(f"data channel {self.label!r} closed before it opened")

    def send(self, data: Data) -> None:
        if self.channel.readyState != "open":
            raise PeerClosedError(
                f"data channel {self.label!r} is {self.channel.readyState}, not open"
            )
        self.channel.send(data)

    async def receive(self) -> Data:
        """The next message; raises :class:`PeerClosedError` once the channel is closed."""
        try:
            return await self._messages.get()
        except StopAsyncIteration:
            raise PeerClosedError(f"data channel {self.label!r} is closed") from None

    def __aiter__(self) -> EventStream[Data]:
        return self._messages

    def close(self) -> None:
        self.channel.close()

    def __repr__(self) -> str:
        return f"DataChannel({self.label!r}, {self.ready_state})"
