"""STUN message codec (RFC 8489): pure functions over bytes, no I/O.

:func:`parse_message` turns bytes into a :class:`Message` or raises :class:`StunDecodeError` (a
``ValueError``) with an exact message; :meth:`Message.encode` writes one, optionally closing it with
MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 and FINGERPRINT. Attribute values stay raw bytes here;
:mod:`pulsebeam.turn.attributes` decodes and encodes the typed ones.

Written by hand rather than taken from aioice's ``stun`` module: a server needs what that client
codec does not offer (MESSAGE-INTEGRITY-SHA256, strict bounds and padding checks with exact errors,
the order rules around the integrity attributes, unknown comprehension-required attributes).
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import struct
from dataclasses import dataclass, field
from enum import IntEnum

__all__ = [
    "HEADER_LENGTH",
    "MAGIC_COOKIE",
    "Attr",
    "Message",
    "MessageClass",
    "Method",
    "StunDecodeError",
    "long_term_key",
    "parse_message",
]

MAGIC_COOKIE = 0x2112A442
HEADER_LENGTH = 20
_COOKIE_BYTES = struct.pack("!I", MAGIC_COOKIE)
_FINGERPRINT_XOR = 0x5354554E
_HEADER = struct.Struct("!HHI12s")
_ATTR_HEADER = struct.Struct("!HH")


class StunDecodeError(ValueError):
    """Bytes that are not a well-formed STUN message; the text says what is wrong."""


class Method(IntEnum):
    BINDING = 0x001
    ALLOCATE = 0x003
    REFRESH = 0x004
    SEND = 0x006
    DATA = 0x007
    CREATE_PERMISSION = 0x008
    CHANNEL_BIND = 0x009


class MessageClass(IntEnum):
    REQUEST = 0b00
    INDICATION = 0b01
    SUCCESS = 0b10
    ERROR = 0b11


class Attr(IntEnum):
    """Attribute types we know (RFC 8489, RFC 8656, and the ICE ones clients send)."""

    MAPPED_ADDRESS = 0x0001
    USERNAME = 0x0006
    MESSAGE_INTEGRITY = 0x0008
    ERROR_CODE = 0x0009
    UNKNOWN_ATTRIBUTES = 0x000A
    CHANNEL_NUMBER = 0x000C
    LIFETIME = 0x000D
    XOR_PEER_ADDRESS = 0x0012
    DATA = 0x0013
    REALM = 0x0014
    NONCE = 0x0015
    XOR_RELAYED_ADDRESS = 0x0016
    REQUESTED_ADDRESS_FAMILY = 0x0017
    EVEN_PORT = 0x0018
    REQUESTED_TRANSPORT = 0x0019
    DONT_FRAGMENT = 0x001A
    MESSAGE_INTEGRITY_SHA256 = 0x001C
    PASSWORD_ALGORITHM = 0x001D
    USERHASH = 0x001E
    XOR_MAPPED_ADDRESS = 0x0020
    RESERVATION_TOKEN = 0x0022
    PRIORITY = 0x0024
    USE_CANDIDATE = 0x0025
    ADDITIONAL_ADDRESS_FAMILY = 0x8000
    ADDRESS_ERROR_CODE = 0x8001
    PASSWORD_ALGORITHMS = 0x8002
    ALTERNATE_DOMAIN = 0x8003
    ICMP = 0x8004
    SOFTWARE = 0x8022
    ALTERNATE_SERVER = 0x8023
    FINGERPRINT = 0x8028
    ICE_CONTROLLED = 0x8029
    ICE_CONTROLLING = 0x802A


_KNOWN_ATTRS = frozenset(int(a) for a in Attr)
_INTEGRITY_SIZES = {Attr.MESSAGE_INTEGRITY: 20, Attr.MESSAGE_INTEGRITY_SHA256: 32}


def _message_type(method: int, cls: int) -> int:
    # The 12 method bits are split around the two class bits (RFC 8489 section 5).
    return (
        (method & 0x000F)
        | ((method & 0x0070) << 1)
        | ((method & 0x0F80) << 2)
        | ((cls & 0b01) << 4)
        | ((cls & 0b10) << 7)
    )


def _split_type(message_type: int) -> tuple[int, int]:
    method = (
        (message_type & 0x000F) | ((message_type >> 1) & 0x0070) | ((message_type >> 2) & 0x0F80)
    )
    cls = ((message_type >> 4) & 0b01) | ((message_type >> 7) & 0b10)
    return method, cls


def _padded(length: int) -> int:
    return (length + 3) & ~3


def long_term_key(username: str, realm: str, password: str, *, sha256: bool = False) -> bytes:
    """The long-term credential key: MD5 (or SHA-256) of ``username:realm:password``.

    Our usernames and passwords are ASCII (``expiry:kid:project`` and base64), for which the
    OpaqueString/SASLprep preparation the RFCs ask for is the identity, so none is applied.
    """
    text = f"{username}:{realm}:{password}".encode()
    if sha256:
        return hashlib.sha256(text).digest()
    return hashlib.md5(text, usedforsecurity=False).digest()


@dataclass(slots=True)
class Message:
    """One STUN message. ``attributes`` keeps wire order; values are raw (unpadded) bytes."""

    method: int
    message_class: int
    transaction_id: bytes
    attributes: list[tuple[int, bytes]] = field(default_factory=list)
    # Set by parse_message: the raw bytes and where each integrity attribute starts, so that
    # check_integrity can recompute the HMAC over exactly the bytes the sender covered.
    raw: bytes = b""
    integrity_offsets: dict[int, int] = field(default_factory=dict)

    def get(self, attr_type: int) -> bytes | None:
        """The first value of an attribute type (later duplicates are ignored, as RFC 8489 says)."""
        for t, value in self.attributes:
            if t == attr_type:
                return value
        return None

    def get_all(self, attr_type: int) -> list[bytes]:
        return [value for t, value in self.attributes if t == attr_type]

    def add(self, attr_type: int, value: bytes) -> Message:
        self.attributes.append((attr_type, value))
        return self

    def unknown_required(self) -> list[int]:
        """Comprehension-required attribute types (below 0x8000) that we do not know."""
        return sorted({t for t, _ in self.attributes if t < 0x8000 and t not in _KNOWN_ATTRS})

    def check_integrity(self, key: bytes) -> bool:
        """True when the message's strongest integrity attribute verifies with ``key``.

        MESSAGE-INTEGRITY-SHA256 wins when present (RFC 8489 section 14.6); a message without
        either attribute never verifies.
        """
        for attr_type, digest in (
            (Attr.MESSAGE_INTEGRITY_SHA256, hashlib.sha256),
            (Attr.MESSAGE_INTEGRITY, hashlib.sha1),
        ):
            offset = self.integrity_offsets.get(attr_type)
            if offset is None:
                continue
            size = _INTEGRITY_SIZES[attr_type]
            length = offset - HEADER_LENGTH + 4 + size
            covered = self.raw[:2] + struct.pack("!H", length) + self.raw[4:offset]
            expected = hmac.new(key, covered, digest).digest()
            received = self.raw[offset + 4 : offset + 4 + size]
            return hmac.compare_digest(expected, received)
        return False

    def encode(
        self,
        integrity_key: bytes | None = None,
        *,
        sha1: bool = True,
        sha256: bool = False,
        fingerprint: bool = True,
    ) -> bytes:
        """Bytes on the wire; with a key, appends MESSAGE-INTEGRITY (``sha1``) and/or
        MESSAGE-INTEGRITY-SHA256 (``sha256``); then FINGERPRINT when asked."""
        body = bytearray()
        for attr_type, value in self.attributes:
            body += _ATTR_HEADER.pack(attr_type, len(value))
            body += value
            body += b"\x00" * (_padded(len(value)) - len(value))
        msg_type = _message_type(self.method, self.message_class)
        prefix = struct.pack("!H", msg_type)
        tail = _COOKIE_BYTES + self.transaction_id
        if integrity_key is not None:
            for enabled, attr_type, digest in (
                (sha1, Attr.MESSAGE_INTEGRITY, hashlib.sha1),
                (sha256, Attr.MESSAGE_INTEGRITY_SHA256, hashlib.sha256),
            ):
                if not enabled:
                    continue
                size = _INTEGRITY_SIZES[attr_type]
                covered = prefix + struct.pack("!H", len(body) + 4 + size) + tail + body
                body += _ATTR_HEADER.pack(attr_type, size)
                body += hmac.new(integrity_key, covered, digest).digest()
        if fingerprint:
            covered = prefix + struct.pack("!H", len(body) + 8) + tail + body
            crc = (binascii.crc32(covered) ^ _FINGERPRINT_XOR) & 0xFFFFFFFF
            body += _ATTR_HEADER.pack(Attr.FINGERPRINT, 4) + struct.pack("!I", crc)
        return prefix + struct.pack("!H", len(body)) + tail + bytes(body)


def parse_message(data: bytes) -> Message:
    """Parse one complete STUN message (exactly ``data``) or raise :class:`StunDecodeError`.

    Attributes after MESSAGE-INTEGRITY other than MESSAGE-INTEGRITY-SHA256 and FINGERPRINT are
    dropped (RFC 8489 section 14.5); FINGERPRINT must be last and must match.
    """
    if len(data) < HEADER_LENGTH:
        raise StunDecodeError(f"STUN message too short: {len(data)} bytes, need at least 20")
    msg_type, length, cookie, transaction_id = _HEADER.unpack_from(data)
    if msg_type & 0xC000:
        raise StunDecodeError("not a STUN message: the two leading bits must be zero")
    if cookie != MAGIC_COOKIE:
        raise StunDecodeError(f"bad magic cookie 0x{cookie:08x}, expected 0x2112a442")
    if length % 4:
        raise StunDecodeError(f"STUN message length {length} is not a multiple of 4")
    if HEADER_LENGTH + length != len(data):
        raise StunDecodeError(
            f"STUN header says {length} bytes of attributes but {len(data) - HEADER_LENGTH} follow"
        )
    method, cls = _split_type(msg_type)
    message = Message(method, cls, bytes(transaction_id), raw=bytes(data))
    offset = HEADER_LENGTH
    end = len(data)
    after_integrity = False
    while offset < end:
        if end - offset < 4:
            raise StunDecodeError(f"truncated attribute header at offset {offset}")
        attr_type, attr_len = _ATTR_HEADER.unpack_from(data, offset)
        value_start = offset + 4
        if value_start + _padded(attr_len) > end:
            raise StunDecodeError(
                f"attribute 0x{attr_type:04x} at offset {offset} overruns the message"
                f" ({attr_len} bytes declared)"
            )
        value = bytes(data[value_start : value_start + attr_len])
        if attr_type == Attr.FINGERPRINT:
            if value_start + 4 != end or attr_len != 4:
                raise StunDecodeError("FINGERPRINT must be the last attribute, 4 bytes long")
            covered = data[:2] + struct.pack("!H", offset + 8 - HEADER_LENGTH) + data[4:offset]
            crc = (binascii.crc32(covered) ^ _FINGERPRINT_XOR) & 0xFFFFFFFF
            if struct.unpack("!I", value)[0] != crc:
                raise StunDecodeError("FINGERPRINT does not match the message")
        elif attr_type in _INTEGRITY_SIZES:
            if attr_len != _INTEGRITY_SIZES[attr_type]:
                raise StunDecodeError(
                    f"attribute 0x{attr_type:04x} must be {_INTEGRITY_SIZES[attr_type]} bytes,"
                    f" got {attr_len}"
                )
            if attr_type not in message.integrity_offsets:
                message.integrity_offsets[attr_type] = offset
            after_integrity = True
        elif not after_integrity:
            message.attributes.append((attr_type, value))
        offset = value_start + _padded(attr_len)
    return message
