"""A minimal asyncio STUN/TURN client over UDP, TCP or TLS, built on the codec.

It serves the tests, the benchmark and checks of a deployment; peers use aioice (inside aiortc)
or a browser. Because it shares our codec, the interop tests with coturn's clients and aioice are
what keep codec and server honest against implementations written elsewhere.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from typing import Any, cast

from pulsebeam.turn.attributes import (
    decode_error_code,
    decode_text,
    decode_xor_address,
    encode_channel_number,
    encode_u32,
    encode_xor_address,
)
from pulsebeam.turn.channeldata import encode_channel_data, is_channel_data, stream_frame_length
from pulsebeam.turn.stun import Attr, Message, MessageClass, Method, long_term_key, parse_message

__all__ = ["StunError", "TurnClient"]

TIMEOUT = 3.0


class StunError(Exception):
    def __init__(self, code: int, reason: str, message: Message) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason
        self.message = message


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, inbox: asyncio.Queue[bytes]) -> None:
        self.inbox = inbox

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.inbox.put_nowait(data)


class _Stream(asyncio.Protocol):
    def __init__(self, inbox: asyncio.Queue[bytes]) -> None:
        self.inbox = inbox
        self.buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (n := stream_frame_length(self.buffer)) is not None and len(self.buffer) >= n:
            self.inbox.put_nowait(bytes(self.buffer[:n]))
            del self.buffer[:n]


class TurnClient:
    """One 5-tuple to the server. ``request`` sends and waits for the matching answer; data
    arriving from the relay (Data indications, ChannelData) lands in :meth:`receive`."""

    def __init__(self, kind: str, transport: asyncio.BaseTransport) -> None:
        self.kind = kind
        self.transport = transport
        self.inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self.username = ""
        self.password = ""
        self.realm = ""
        self.nonce = b""
        self.sha256 = False  # use PASSWORD-ALGORITHM SHA-256 and MESSAGE-INTEGRITY-SHA256
        self.algorithms = b""  # PASSWORD-ALGORITHMS as the server offered them
        self.last_sent = b""  # the bytes of the last request, for retransmission tests

    @classmethod
    async def connect(
        cls, kind: str, address: tuple[str, int], tls: ssl.SSLContext | None = None
    ) -> TurnClient:
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue[bytes] = asyncio.Queue()
        transport: asyncio.BaseTransport
        if kind == "udp":
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Udp(inbox), remote_addr=address
            )
        else:
            transport, _ = await loop.create_connection(
                lambda: _Stream(inbox), address[0], address[1], ssl=tls
            )
        client = cls(kind, transport)
        client.inbox = inbox
        return client

    def close(self) -> None:
        self.transport.close()

    def send_raw(self, data: bytes) -> None:
        if self.kind == "udp":
            cast(asyncio.DatagramTransport, self.transport).sendto(data)
        else:
            cast(asyncio.WriteTransport, self.transport).write(data)

    async def answer(self, transaction_id: bytes) -> Message:
        """The next STUN message with this transaction id (unbounded: wrap in a timeout)."""
        while True:
            data = await self.inbox.get()
            if is_channel_data(data):
                continue
            msg = parse_message(data)
            if msg.transaction_id == transaction_id:
                return msg

    async def _send_until_answered(self, data: bytes, msg: Message, retransmit: bool) -> Message:
        # Over UDP a request is retransmitted every RTO (RFC 8489 section 6.2.1: 500 ms).
        answer = asyncio.ensure_future(self.answer(msg.transaction_id))
        rto = 0.5 if self.kind == "udp" and retransmit else None
        try:
            while True:
                self.send_raw(data)
                done, _ = await asyncio.wait({answer}, timeout=rto)
                if done:
                    return answer.result()
        finally:
            answer.cancel()

    async def transact(
        self, msg: Message, *, sign: bool = True, within: float = TIMEOUT, retransmit: bool = True
    ) -> Message:
        """Send a request (signed when we hold a nonce) and return the success answer, or raise
        :class:`StunError` for an error answer; ``TimeoutError`` when nothing comes back."""
        if sign and self.nonce:
            msg.add(Attr.USERNAME, self.username.encode())
            msg.add(Attr.REALM, self.realm.encode())
            msg.add(Attr.NONCE, self.nonce)
            if self.sha256:
                msg.add(Attr.PASSWORD_ALGORITHMS, self.algorithms)
                msg.add(Attr.PASSWORD_ALGORITHM, b"\x00\x02\x00\x00")
            key = long_term_key(self.username, self.realm, self.password, sha256=self.sha256)
            data = msg.encode(key, sha1=not self.sha256, sha256=self.sha256)
        else:
            data = msg.encode()
        self.last_sent = data
        answer = await asyncio.wait_for(self._send_until_answered(data, msg, retransmit), within)
        if answer.message_class == MessageClass.ERROR:
            code, reason = decode_error_code(answer.get(Attr.ERROR_CODE) or b"\0\0\0\0")
            raise StunError(code, reason, answer)
        return answer

    async def authed(self, method: int, attributes: list[tuple[int, bytes]]) -> Message:
        """A TURN request with long-term credentials: learns realm/nonce from 401/438."""
        for _ in range(3):
            msg = Message(method, MessageClass.REQUEST, os.urandom(12), list(attributes))
            try:
                return await self.transact(msg)
            except StunError as exc:
                if exc.code not in (401, 438) or (exc.code == 401 and self.nonce):
                    raise
                self.realm = decode_text(exc.message.get(Attr.REALM) or b"", "REALM")
                self.nonce = exc.message.get(Attr.NONCE) or b""
                self.algorithms = exc.message.get(Attr.PASSWORD_ALGORITHMS) or b""
        raise AssertionError("no answer after three challenges")

    async def allocate(self, username: str, password: str, lifetime: int | None = None) -> Message:
        self.username, self.password = username, password
        attributes = [(int(Attr.REQUESTED_TRANSPORT), b"\x11\0\0\0")]
        if lifetime is not None:
            attributes.append((Attr.LIFETIME, encode_u32(lifetime)))
        return await self.authed(Method.ALLOCATE, attributes)

    def relayed_address(self, answer: Message) -> tuple[str, int]:
        value = answer.get(Attr.XOR_RELAYED_ADDRESS)
        assert value is not None
        return decode_xor_address(value, answer.transaction_id)

    async def create_permission(self, *peers: tuple[str, int]) -> Message:
        tid = os.urandom(12)
        attrs = [(int(Attr.XOR_PEER_ADDRESS), encode_xor_address(p, tid)) for p in peers]
        msg = Message(Method.CREATE_PERMISSION, MessageClass.REQUEST, tid, attrs)
        return await self.transact(msg)

    async def channel_bind(self, channel: int, peer: tuple[str, int]) -> Message:
        tid = os.urandom(12)
        msg = Message(Method.CHANNEL_BIND, MessageClass.REQUEST, tid)
        msg.add(Attr.CHANNEL_NUMBER, encode_channel_number(channel))
        msg.add(Attr.XOR_PEER_ADDRESS, encode_xor_address(peer, tid))
        return await self.transact(msg)

    async def refresh(self, lifetime: int) -> Message:
        msg = Message(Method.REFRESH, MessageClass.REQUEST, os.urandom(12))
        msg.add(Attr.LIFETIME, encode_u32(lifetime))
        return await self.transact(msg)

    def send_channel(self, channel: int, data: bytes) -> None:
        self.send_raw(encode_channel_data(channel, data, stream=self.kind != "udp"))

    def send_indication(self, peer: tuple[str, int], data: bytes) -> None:
        tid = os.urandom(12)
        msg = Message(Method.SEND, MessageClass.INDICATION, tid)
        msg.add(Attr.XOR_PEER_ADDRESS, encode_xor_address(peer, tid))
        msg.add(Attr.DATA, data)
        self.send_raw(msg.encode())

    async def receive(self, within: float = TIMEOUT) -> bytes:
        """The next relayed datagram (a ChannelData frame or a Data indication's raw bytes)."""
        return await asyncio.wait_for(self.inbox.get(), within)
