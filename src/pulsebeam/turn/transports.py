"""asyncio protocols of the TURN listeners: UDP datagrams, and TCP/TLS byte streams.

The UDP listener is on the hot path for ChannelData from clients: the first byte tells ChannelData
from STUN, one dict lookup finds the allocation, and the frame goes straight to its relay socket.
A TCP or TLS connection is one 5-tuple: it carries at most one allocation, which ends with the
connection (RFC 8656 section 3.1); its byte stream is cut into STUN and padded ChannelData frames.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import Any, cast

from pulsebeam.turn.allocation import Allocation, FiveTuple
from pulsebeam.turn.attributes import Address
from pulsebeam.turn.channeldata import stream_frame_length
from pulsebeam.turn.handler import RequestHandler
from pulsebeam.turn.stun import StunDecodeError

__all__ = ["StreamConnection", "UdpLink", "UdpListener"]

logger = logging.getLogger(__name__)


class UdpListener(asyncio.DatagramProtocol):
    """The UDP STUN/TURN socket; ``allocations`` maps client address -> its allocation."""

    def __init__(self, handler: RequestHandler) -> None:
        self._handler = handler
        self.allocations: dict[tuple[str | Any, int], Allocation] = {}
        self.transport: asyncio.DatagramTransport | None = None
        self.address: Address = ("", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's own datagram transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)
        host, port = transport.get_extra_info("sockname")[:2]
        self.address = (host, port)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if data and data[0] & 0xC0 == 0x40:
            allocation = self.allocations.get(addr)
            if allocation is not None:
                allocation.from_client_channel(data)
            return
        self._handler.handle_stun(data, UdpLink(self, addr))

    def error_received(self, exc: Exception) -> None:
        logger.debug("TURN UDP listener: %s", exc)


class UdpLink:
    """One client address on the UDP listener (a :class:`~pulsebeam.turn.allocation.ClientLink`)."""

    stream = False

    def __init__(self, listener: UdpListener, addr: tuple[str | Any, int]) -> None:
        self._listener = listener
        self._addr = addr  # as the socket reports it (4 items for IPv6): the hot path's key
        self.five_tuple: FiveTuple = ("udp", (str(addr[0]), int(addr[1])), listener.address)

    @property
    def alive(self) -> bool:
        return self._listener.transport is not None and not self._listener.transport.is_closing()

    @property
    def send(self) -> Callable[[bytes], None]:
        """``sendto`` bound to this client's address: one C call per relayed packet."""
        transport = self._listener.transport
        if transport is None:
            return _drop
        return functools.partial(transport.sendto, addr=self._addr)

    def attach(self, allocation: Allocation) -> None:
        self._listener.allocations[self._addr] = allocation

    def detach(self, allocation: Allocation) -> None:
        if self._listener.allocations.get(self._addr) is allocation:
            del self._listener.allocations[self._addr]


def _drop(data: bytes) -> None:
    """Where sends go while the listener has no socket (never, once started)."""


class StreamConnection(asyncio.Protocol):
    """One TCP or TLS client connection (a ClientLink whose allocation ends with it)."""

    stream = True

    def __init__(
        self,
        handler: RequestHandler,
        kind: str,
        on_made: Callable[[StreamConnection], None],
        on_lost: Callable[[StreamConnection], None],
        idle_timeout: float,
    ) -> None:
        self._handler = handler
        self._kind = kind
        self._on_made = on_made
        self._on_lost = on_lost
        self._buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.allocation: Allocation | None = None
        self.five_tuple: FiveTuple = (kind, ("", 0), ("", 0))
        self.alive = False
        self._idle_timeout = idle_timeout
        self._idle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        self.five_tuple = (self._kind, (peer[0], peer[1]), (local[0], local[1]))
        self.alive = True
        # Registered here, not when created: a TLS connection whose handshake fails never
        # gets connection_made nor connection_lost, and must not stay tracked.
        self._on_made(self)
        self._arm_idle()

    def _arm_idle(self) -> None:
        # A connection without an allocation only ties up a socket: close it after a while.
        if self._idle is not None:
            self._idle.cancel()
        self._idle = asyncio.get_running_loop().call_later(self._idle_timeout, self._close_if_idle)

    def _close_if_idle(self) -> None:
        if self.allocation is None:
            logger.debug("closing idle %s", self.five_tuple)
            self.close()

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while True:
            try:
                length = stream_frame_length(buffer)
            except StunDecodeError as exc:
                logger.debug("closing %s: %s", self.five_tuple, exc)
                if self.transport is not None:
                    self.transport.close()
                return
            if length is None or len(buffer) < length:
                return
            frame = bytes(buffer[:length])
            del buffer[:length]
            if frame[0] & 0xC0 == 0x40:
                if self.allocation is not None:
                    self.allocation.from_client_channel(frame)
            else:
                self._handler.handle_stun(frame, self)

    def send(self, data: bytes) -> None:
        if self.transport is not None and self.alive:
            self.transport.write(data)

    def attach(self, allocation: Allocation) -> None:
        self.allocation = allocation

    def detach(self, allocation: Allocation) -> None:
        if self.allocation is allocation:
            self.allocation = None
            if self.alive:
                self._arm_idle()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.alive = False
        if self._idle is not None:
            self._idle.cancel()
        self._on_lost(self)
