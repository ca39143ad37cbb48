"""A stream sink for tests of streams on their own: records what a stream writes, and can play
a transport whose socket is full (``ready = False``)."""

from __future__ import annotations

import asyncio

from pulsebeam.signaling.streams import Closed, Stream, StreamClock, StreamTimes

LONG = StreamTimes(ping_interval=3600.0, expires_in=3600.0, max_age=3600.0)


class RecordingSink:
    def __init__(self, *, ready: bool = True) -> None:
        self.ready = ready
        self.written: list[bytes] = []
        self.ended: Closed | None = None
        self._changed = asyncio.Event()

    def write(self, payload: bytes) -> None:
        assert self.ready, "a stream wrote to a sink that was not ready"
        assert self.ended is None, "a stream wrote after its end"
        self.written.append(payload)
        self._changed.set()

    def end(self, closed: Closed) -> None:
        assert self.ended is None, "a stream ended twice"
        self.ended = closed
        self._changed.set()

    def take(self) -> list[bytes]:
        items, self.written = self.written, []
        return items

    async def next(self, within: float = 5.0) -> bytes:
        async with asyncio.timeout(within):
            while not self.written:
                self._changed.clear()
                await self._changed.wait()
        return self.written.pop(0)

    async def wait_end(self, within: float = 5.0) -> Closed:
        async with asyncio.timeout(within):
            while self.ended is None:
                self._changed.clear()
                await self._changed.wait()
        return self.ended


def start(stream: Stream, sink: RecordingSink, times: StreamTimes = LONG) -> list[Stream]:
    """Start ``stream`` on ``sink``; returns the list its end callback appends to."""
    ended: list[Stream] = []
    stream.start(sink, times, clock=StreamClock(0.02), ping=b"PING", on_end=ended.append)
    return ended
