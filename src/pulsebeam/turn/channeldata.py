"""ChannelData messages (RFC 8656 section 12.4) and framing of stream transports: pure codecs.

A ChannelData message is a 4-byte header (channel number, length) and the application data. Over
UDP the data may be followed by padding that receivers ignore; over TCP and TLS it MUST be padded
to a multiple of 4 so that the next message starts on a boundary.
"""

from __future__ import annotations

import struct

from pulsebeam.turn.stun import HEADER_LENGTH, StunDecodeError

__all__ = [
    "CHANNEL_MAX",
    "CHANNEL_MIN",
    "encode_channel_data",
    "is_channel_data",
    "parse_channel_data",
    "stream_frame_length",
]

CHANNEL_MIN = 0x4000
# RFC 8656 narrowed channels to 0x4000-0x4FFF; RFC 5766 allowed up to 0x7FFF and clients still
# pick from there (coturn's turnutils_uclient does), so the wider range is accepted.
CHANNEL_MAX = 0x7FFF
_HEADER = struct.Struct("!HH")
_PAD = (b"", b"\x00\x00\x00", b"\x00\x00", b"\x00")


def is_channel_data(data: bytes) -> bool:
    """True when the first two bits are 01 (STUN messages start with 00)."""
    return bool(data) and data[0] & 0xC0 == 0x40


def encode_channel_data(channel: int, data: bytes, *, stream: bool = False) -> bytes:
    header = _HEADER.pack(channel, len(data))
    if stream:
        return header + data + _PAD[len(data) & 3]
    return header + data


def parse_channel_data(data: bytes) -> tuple[int, bytes]:
    """-> (channel number, application data) or :class:`StunDecodeError`."""
    if len(data) < 4:
        raise StunDecodeError(f"ChannelData too short: {len(data)} bytes")
    channel, length = _HEADER.unpack_from(data)
    if not CHANNEL_MIN <= channel <= CHANNEL_MAX:
        raise StunDecodeError(f"channel number 0x{channel:04x} outside 0x4000-0x7FFF")
    if 4 + length > len(data):
        raise StunDecodeError(f"ChannelData says {length} bytes but {len(data) - 4} follow")
    return channel, data[4 : 4 + length]


def stream_frame_length(buffer: bytes | bytearray) -> int | None:
    """Length of the first whole message in a TCP/TLS byte stream, or ``None`` when more bytes
    are needed; raises :class:`StunDecodeError` when the stream is neither STUN nor ChannelData."""
    if len(buffer) < 4:
        return None
    kind = buffer[0] & 0xC0
    length = (buffer[2] << 8) | buffer[3]
    if kind == 0x00:
        return HEADER_LENGTH + length
    if kind == 0x40:
        return 4 + ((length + 3) & ~3)
    raise StunDecodeError(f"stream byte 0x{buffer[0]:02x} starts neither STUN nor ChannelData")
