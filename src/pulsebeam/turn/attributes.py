"""Typed STUN/TURN attribute values (RFC 8489 section 14, RFC 8656 section 18): pure codecs.

Every ``decode_*`` raises :class:`~pulsebeam.turn.stun.StunDecodeError` with an exact message for a
value of the wrong size or content; every ``encode_*`` returns the unpadded value bytes.
"""

from __future__ import annotations

import ipaddress
import struct

from pulsebeam.turn.stun import MAGIC_COOKIE, StunDecodeError

__all__ = [
    "FAMILY_IPV4",
    "FAMILY_IPV6",
    "TRANSPORT_UDP",
    "Address",
    "decode_address",
    "decode_channel_number",
    "decode_error_code",
    "decode_even_port",
    "decode_family",
    "decode_password_algorithm",
    "decode_text",
    "decode_u32",
    "decode_unknown_attributes",
    "decode_xor_address",
    "encode_address",
    "encode_channel_number",
    "encode_error_code",
    "encode_password_algorithms",
    "encode_u32",
    "encode_unknown_attributes",
    "encode_xor_address",
]

Address = tuple[str, int]
FAMILY_IPV4 = 0x01
FAMILY_IPV6 = 0x02
TRANSPORT_UDP = 17
_COOKIE = struct.pack("!I", MAGIC_COOKIE)
_MAX_TEXT = 763  # USERNAME, REALM, NONCE, SOFTWARE, reason phrases: < 128 characters, 763 bytes


def _xor(data: bytes, mask: bytes) -> bytes:
    return bytes(a ^ b for a, b in zip(data, mask, strict=False))


def decode_address(value: bytes) -> Address:
    """MAPPED-ADDRESS style value -> (ip text, port)."""
    if len(value) < 4:
        raise StunDecodeError(f"address attribute too short: {len(value)} bytes")
    family, port = value[1], struct.unpack_from("!H", value, 2)[0]
    raw = value[4:]
    if family == FAMILY_IPV4 and len(raw) == 4:
        return str(ipaddress.IPv4Address(raw)), port
    if family == FAMILY_IPV6 and len(raw) == 16:
        return str(ipaddress.IPv6Address(raw)), port
    raise StunDecodeError(
        f"address attribute has family 0x{family:02x} with {len(raw)} address bytes"
    )


def encode_address(address: Address) -> bytes:
    ip = ipaddress.ip_address(address[0])
    family = FAMILY_IPV4 if ip.version == 4 else FAMILY_IPV6
    return struct.pack("!BBH", 0, family, address[1]) + ip.packed


def decode_xor_address(value: bytes, transaction_id: bytes) -> Address:
    """XOR-MAPPED-ADDRESS / XOR-PEER-ADDRESS / XOR-RELAYED-ADDRESS -> (ip text, port)."""
    if len(value) < 4:
        raise StunDecodeError(f"XOR address attribute too short: {len(value)} bytes")
    header = value[:2] + _xor(value[2:4], _COOKIE[:2])
    return decode_address(header + _xor(value[4:], _COOKIE + transaction_id))


def encode_xor_address(address: Address, transaction_id: bytes) -> bytes:
    plain = encode_address(address)
    return plain[:2] + _xor(plain[2:4], _COOKIE[:2]) + _xor(plain[4:], _COOKIE + transaction_id)


def decode_u32(value: bytes, name: str) -> int:
    if len(value) != 4:
        raise StunDecodeError(f"{name} must be 4 bytes, got {len(value)}")
    result: int = struct.unpack("!I", value)[0]
    return result


def encode_u32(number: int) -> bytes:
    return struct.pack("!I", number)


def decode_text(value: bytes, name: str) -> str:
    if len(value) > _MAX_TEXT:
        raise StunDecodeError(f"{name} is {len(value)} bytes, at most {_MAX_TEXT} allowed")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise StunDecodeError(f"{name} is not valid UTF-8") from None


def decode_error_code(value: bytes) -> tuple[int, str]:
    if len(value) < 4:
        raise StunDecodeError(f"ERROR-CODE too short: {len(value)} bytes")
    code = (value[2] & 0x07) * 100 + value[3]
    return code, decode_text(value[4:], "ERROR-CODE reason")


def encode_error_code(code: int, reason: str) -> bytes:
    return struct.pack("!HBB", 0, code // 100, code % 100) + reason.encode()


def decode_unknown_attributes(value: bytes) -> list[int]:
    if len(value) % 2:
        raise StunDecodeError("UNKNOWN-ATTRIBUTES length must be even")
    return list(struct.unpack(f"!{len(value) // 2}H", value))


def encode_unknown_attributes(types: list[int]) -> bytes:
    return struct.pack(f"!{len(types)}H", *types)


def decode_channel_number(value: bytes) -> int:
    if len(value) != 4:
        raise StunDecodeError(f"CHANNEL-NUMBER must be 4 bytes, got {len(value)}")
    number: int = struct.unpack("!H", value[:2])[0]
    return number


def encode_channel_number(number: int) -> bytes:
    return struct.pack("!HH", number, 0)


def decode_family(value: bytes) -> int:
    """REQUESTED-ADDRESS-FAMILY -> 0x01 (IPv4) or 0x02 (IPv6), other values kept for a 440."""
    if len(value) != 4:
        raise StunDecodeError(f"REQUESTED-ADDRESS-FAMILY must be 4 bytes, got {len(value)}")
    return value[0]


def decode_even_port(value: bytes) -> bool:
    """EVEN-PORT -> its R bit (reserve the next port)."""
    if len(value) != 1:
        raise StunDecodeError(f"EVEN-PORT must be 1 byte, got {len(value)}")
    return bool(value[0] & 0x80)


def decode_password_algorithm(value: bytes) -> int:
    """PASSWORD-ALGORITHM -> algorithm number (1 MD5, 2 SHA-256); parameters must be empty."""
    if len(value) < 4:
        raise StunDecodeError(f"PASSWORD-ALGORITHM too short: {len(value)} bytes")
    algorithm, params = struct.unpack_from("!HH", value)
    if params != len(value) - 4:
        raise StunDecodeError("PASSWORD-ALGORITHM parameter length does not match")
    result: int = algorithm
    return result


def encode_password_algorithms(algorithms: list[int]) -> bytes:
    return b"".join(struct.pack("!HH", a, 0) for a in algorithms)
