"""A data channel in the SDK's one idiom: ``await ch.wait_open()``, ``async for msg in ch``.

It wraps an aiortc ``RTCDataChannel`` (reachable as ``.channel``) and subscribes to its
events at once, so no message that arrives before the application iterates is lost (they are
queued without bound: read them, or close the channel).

A channel survives an ICE restart of its session (:mod:`pulsebeam.peer.session`): when the
transport under it dies, the object stays alive and not open, and the session binds it to a
channel on the same stream id of the new connection; the iteration goes on with the messages
that arrive there (those in flight when the path broke are lost). It ends when the application or
the other side closes the channel, or when the session ends.
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
        self._messages: EventStream[Data] = EventStream()
        self._opened = asyncio.Event()
        self._closed = asyncio.Event()
        self._closing = False
        self.channel = channel
        self._bind(channel)

    def _bind(self, channel: RTCDataChannel) -> None:
        self.channel = channel
        if channel.readyState == "open":
            self._opened.set()

        def opened() -> None:
            if channel is self.channel:
                self._opened.set()

        def received(message: Data) -> None:
            if channel is self.channel:
                self._messages.put(message)

        channel.on("open", opened)
        channel.on("message", received)
        channel.on("close", lambda: self._on_close(channel))

    def _on_close(self, channel: RTCDataChannel) -> None:
        if channel is not self.channel:
            return
        self._opened.clear()
        if not self._closing and channel.transport.state == "closed":
            return  # the connection died, not the channel: the session rebinds or ends it
        self.end()

    def rebind(self, channel: RTCDataChannel) -> None:
        """Carry on over ``channel`` (same label, on the session's new connection)."""
        if not self._closed.is_set():
            self._opened.clear()
            self._bind(channel)

    def end(self) -> None:
        """Close the iteration for good (the channel or its session has ended)."""
        self._opened.clear()
        self._closed.set()
        self._messages.close()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

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
        self._closing = True
        if self.channel.readyState == "closed":
            self.end()  # its transport is gone: no close event will come
        else:
            self.channel.close()

    def __repr__(self) -> str:
        return f"DataChannel({self.label!r}, {self.ready_state})"
