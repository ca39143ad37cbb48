"""gRPC-Web binary framing: pure functions over bytes, shared by the server and any client.

A body is a sequence of frames: one flag byte, a 4-byte big-endian length, then the payload.
Flag ``0x00`` carries a protobuf message, flag ``0x80`` the trailers (``name:value\\r\\n`` lines,
``grpc-message`` percent-encoded). Bit ``0x01`` marks a compressed message, which PulseBeam does
not support. Decoding raises ``ValueError`` with an exact message.
"""

from __future__ import annotations

import struct
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "FLAG_COMPRESSED",
    "FLAG_TRAILERS",
    "HEADER_SIZE",
    "Frame",
    "decode_frames",
    "decode_trailers",
    "encode_message",
    "encode_trailers",
]

FLAG_TRAILERS = 0x80
FLAG_COMPRESSED = 0x01
HEADER_SIZE = 5
_HEADER = struct.Struct(">BI")


@dataclass(frozen=True, slots=True)
class Frame:
    flags: int
    payload: bytes

    @property
    def is_trailers(self) -> bool:
        return bool(self.flags & FLAG_TRAILERS)


def encode_message(payload: bytes) -> bytes:
    """One data frame; an empty payload gives the 5-byte frame a unary response needs."""
    return _HEADER.pack(0, len(payload)) + payload


def encode_trailers(
    status: int, message: str = "", extra: Mapping[str, str] | None = None
) -> bytes:
    lines = [f"grpc-status:{int(status)}"]
    if message:
        lines.append(f"grpc-message:{percent_encode(message)}")
    lines.extend(f"{name}:{value}" for name, value in (extra or {}).items())
    block = ("\r\n".join(lines) + "\r\n").encode("ascii")
    return _HEADER.pack(FLAG_TRAILERS, len(block)) + block


def percent_encode(message: str) -> str:
    """The gRPC rule: printable ASCII except ``%`` goes as is, everything else as UTF-8 %XX."""
    return urllib.parse.quote(message, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~")


def decode_frames(data: bytes) -> tuple[list[Frame], bytes]:
    """Split ``data`` into complete frames; returns them and the incomplete rest (maybe empty)."""
    frames: list[Frame] = []
    offset = 0
    view = memoryview(data)
    while len(data) - offset >= HEADER_SIZE:
        flags, length = _HEADER.unpack_from(data, offset)
        end = offset + HEADER_SIZE + length
        if end > len(data):
            break
        frames.append(Frame(flags, bytes(view[offset + HEADER_SIZE : end])))
        offset = end
    return frames, bytes(view[offset:])


def decode_trailers(payload: bytes) -> dict[str, str]:
    """Parse a trailers block; names are lower-cased and ``grpc-message`` is percent-decoded."""
    try:
        text = payload.decode("ascii")
    except UnicodeDecodeError:
        raise ValueError("gRPC-Web trailers are not ASCII") from None
    trailers: dict[str, str] = {}
    for line in text.split("\r\n"):
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"gRPC-Web trailer line {line[:40]!r} has no ':'")
        name = name.strip().lower()
        value = value.strip()
        trailers[name] = urllib.parse.unquote(value) if name == "grpc-message" else value
    return trailers
