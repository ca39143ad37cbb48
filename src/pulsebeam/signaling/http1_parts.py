"""Connection-level parts of the HTTP/1.1 fast path (:mod:`.http1`), each a lighter or
faster stand-in for what uvicorn makes per connection."""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.flow_control import FlowControl

__all__ = ["CoalescingTransport", "LightFlowControl", "Pipeline"]


class CoalescingTransport:
    """Proxies a transport. ``write`` (uvicorn's ASGI path) is deferred to the end of the loop
    step: an ASGI unary answer is two sends (headers, then body), which would otherwise be two
    syscalls. ``write_now`` (the fast path, which writes whole answers) goes straight out unless
    deferred writes are pending, which it must not overtake."""

    __slots__ = ("_ended", "_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] | None = None
        self._ended = False  # after write_eof: nothing more may be written

    def write(self, data: bytes) -> None:
        if self._pending is None:
            self._pending = []
            self._loop.call_soon(self._flush)
        self._pending.append(bytes(data))

    def write_eof(self) -> None:
        self._flush()
        self._ended = True
        if self._transport.can_write_eof():
            self._transport.write_eof()

    def is_closing(self) -> bool:  # on every write: spelled out rather than via __getattr__
        return self._transport.is_closing()

    def write_now(self, data: bytes) -> None:
        if self._pending is not None:
            self._pending.append(data)
        elif not self._transport.is_closing() and not self._ended:
            self._transport.write(data)

    def _flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending and not self._transport.is_closing() and not self._ended:
            self._transport.write(b"".join(pending))

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class LightFlowControl(FlowControl):
    """uvicorn's flow control without an ``asyncio.Event`` per connection (~0.7 KiB each): the
    event is made only when an ASGI response actually waits for a full socket to drain."""

    def __init__(self, transport: asyncio.Transport) -> None:  # no super(): it makes the event
        self._transport = transport
        self.read_paused = False
        self.write_paused = False
        self._event: asyncio.Event | None = None

    async def drain(self) -> None:
        if self.write_paused:
            if self._event is None:
                self._event = asyncio.Event()
            await self._event.wait()

    def pause_writing(self) -> None:
        self.write_paused = True
        if self._event is not None:
            self._event.clear()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self._event is not None:
            self._event.set()


class Pipeline(list[Any]):
    """The queue of pipelined ASGI requests, as a list: an empty deque costs ~0.6 KiB per
    connection and pipelining is rare (uvicorn only appends left and pops right)."""

    def appendleft(self, item: Any) -> None:
        self.insert(0, item)
