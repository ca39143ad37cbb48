"""One TURN allocation (RFC 8656 section 2.2): a relay UDP socket, its permissions and channels.

This is the hot path. Data from a peer arrives in :meth:`Allocation.datagram_received` and leaves
towards the client as ChannelData (when the peer has a channel) or a Data indication; data from
the client arrives as ChannelData (:meth:`from_client_channel`) or a Send indication
(:meth:`from_client_send`). Each checks one dict for the peer's permission, sends, and bumps two
integers. Lifetimes are not looked at per packet: the manager's sweeper removes expired
permissions, channels and allocations once a second.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import struct
import time
from collections.abc import Callable
from typing import Any, Protocol, cast

from pulsebeam.turn.attributes import Address, encode_xor_address
from pulsebeam.turn.channeldata import encode_channel_data
from pulsebeam.turn.stun import Attr, Message, MessageClass, Method

__all__ = ["Allocation", "ClientLink", "FiveTuple"]

logger = logging.getLogger(__name__)

FiveTuple = tuple[str, Address, Address]
"""(transport "udp"/"tcp"/"tls", client address, server address)."""

_CHANNEL_HEADER = struct.Struct("!HH")


class ClientLink(Protocol):
    """How an allocation reaches its client: a UDP listener + address, or a TCP/TLS connection."""

    @property
    def five_tuple(self) -> FiveTuple: ...

    @property
    def stream(self) -> bool: ...

    @property
    def alive(self) -> bool: ...

    def send(self, data: bytes) -> None: ...

    def attach(self, allocation: Allocation) -> None: ...

    def detach(self, allocation: Allocation) -> None: ...


class Allocation(asyncio.DatagramProtocol):
    """State of one allocation; also the asyncio protocol of its relay socket."""

    __slots__ = (
        "_rate",
        "_relay_sendto",
        "_send",
        "_stamp",
        "_stream",
        "_tokens",
        "bytes",
        "channel_expiry",
        "channels",
        "closed",
        "created_at",
        "expires_at",
        "five_tuple",
        "key_id",
        "last_allocate",
        "link",
        "packets",
        "peer_channels",
        "permissions",
        "project_id",
        "relayed_address",
        "transport",
        "username",
    )

    def __init__(
        self,
        link: ClientLink,
        *,
        username: str,
        key_id: str,
        project_id: str,
        expires_at: float,
        bandwidth_bps: int = 0,
    ) -> None:
        self.link = link
        self.five_tuple = link.five_tuple
        self.username = username
        self.key_id = key_id
        self.project_id = project_id
        self.created_at = time.monotonic()  # bounds refreshes past the credential's expiry
        self.expires_at = expires_at  # time.monotonic() deadline
        self.permissions: dict[str, float] = {}  # peer IP -> deadline
        self.channels: dict[int, Address] = {}  # channel number -> peer
        self.peer_channels: dict[Address, int] = {}  # peer -> channel number
        self.channel_expiry: dict[int, float] = {}
        self.relayed_address: Address = ("0.0.0.0", 0)  # noqa: S104 - set when bound
        self.transport: asyncio.DatagramTransport | None = None
        self.last_allocate: tuple[bytes, bytes] | None = None  # (transaction id, response)
        self.packets = 0  # relayed since the last flush, both directions
        self.bytes = 0
        self.closed = False
        self._stream = link.stream
        self._send = link.send
        self._relay_sendto: Callable[[bytes, Address], None] = _not_bound
        # Per-allocation bandwidth cap (token bucket, 1 s burst); 0 = no cap, no per-packet cost.
        self._rate = float(bandwidth_bps)
        self._tokens = float(bandwidth_bps)
        self._stamp = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's own datagram transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)
        self._relay_sendto = self.transport.sendto
        host, port = transport.get_extra_info("sockname")[:2]
        self.relayed_address = (host, port)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (peer port closed) are routine on a relay; RFC 8656 lets us ignore them.
        logger.debug("relay %s: %s", self.relayed_address, exc)

    def _within_cap(self, size: int) -> bool:
        now = time.monotonic()
        self._tokens = min(self._rate, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if self._tokens < size:
            return False
        self._tokens -= size
        return True

    # -- peer -> client -------------------------------------------------------------------------
    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if addr[0] not in self.permissions:
            return
        if self._rate and not self._within_cap(len(data)):
            return
        channel = self.peer_channels.get(addr)
        if channel is not None:
            if self._stream:
                self._send(encode_channel_data(channel, data, stream=True))
            else:  # the common case, inlined: header + data
                self._send(_CHANNEL_HEADER.pack(channel, len(data)) + data)
        else:
            indication = Message(Method.DATA, MessageClass.INDICATION, _data_tid())
            indication.add(
                Attr.XOR_PEER_ADDRESS, encode_xor_address(addr, indication.transaction_id)
            )
            indication.add(Attr.DATA, data)
            self._send(indication.encode(fingerprint=False))
        self.packets += 1
        self.bytes += len(data)

    # -- client -> peer -------------------------------------------------------------------------
    def from_client_channel(self, frame: bytes) -> None:
        """Relay one ChannelData message from the client (silently dropped when not allowed)."""
        if len(frame) < 4:
            return
        channel, length = _CHANNEL_HEADER.unpack_from(frame)
        peer = self.channels.get(channel)
        if peer is None or length > len(frame) - 4 or peer[0] not in self.permissions:
            return
        if self._rate and not self._within_cap(length):
            return
        self._relay_sendto(frame[4 : 4 + length], peer)
        self.packets += 1
        self.bytes += length

    def from_client_send(self, peer: Address, data: bytes) -> None:
        """Relay the DATA of a Send indication (silently dropped when not allowed)."""
        if peer[0] not in self.permissions:
            return
        if self._rate and not self._within_cap(len(data)):
            return
        self._relay_sendto(data, peer)
        self.packets += 1
        self.bytes += len(data)

    # -- state ----------------------------------------------------------------------------------
    def add_permission(self, peer_ip: str, deadline: float) -> None:
        self.permissions[peer_ip] = deadline

    def bind_channel(
        self, channel: int, peer: Address, deadline: float, permission_deadline: float
    ) -> None:
        """Bind (or refresh) a channel; it also installs or refreshes the peer's permission."""
        self.channels[channel] = peer
        self.peer_channels[peer] = channel
        self.channel_expiry[channel] = deadline
        self.permissions[peer[0]] = max(self.permissions.get(peer[0], 0.0), permission_deadline)

    def expire(self, now: float) -> None:
        """Drop permissions and channels whose lifetime has passed."""
        for ip in [ip for ip, deadline in self.permissions.items() if deadline <= now]:
            del self.permissions[ip]
        for channel in [c for c, deadline in self.channel_expiry.items() if deadline <= now]:
            del self.channel_expiry[channel]
            peer = self.channels.pop(channel)
            self.peer_channels.pop(peer, None)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        self.link.detach(self)


def _not_bound(data: bytes, addr: Address) -> None:
    """Stands in for the relay socket's sendto until it is bound: drops the datagram."""


def _data_tid() -> bytes:
    # Data indications need a transaction id but nobody answers them: uniqueness is enough,
    # and a counter is cheaper than asking the OS for random bytes on every packet.
    return _TID_PREFIX + (next(_TID_COUNTER) & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "big")


_TID_PREFIX = os.urandom(4)
_TID_COUNTER = itertools.count(1)
