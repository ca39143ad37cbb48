"""The pure codec: RFC 5769 test vectors, round trips, and exact errors."""

from __future__ import annotations

import hashlib

import pytest

from pulsebeam.turn.attributes import (
    decode_address,
    decode_error_code,
    decode_xor_address,
    encode_error_code,
    encode_xor_address,
)
from pulsebeam.turn.channeldata import (
    encode_channel_data,
    parse_channel_data,
    stream_frame_length,
)
from pulsebeam.turn.stun import (
    Attr,
    Message,
    MessageClass,
    Method,
    StunDecodeError,
    long_term_key,
    parse_message,
)

# RFC 5769 section 2.1: sample request, short-term credentials.
SAMPLE_REQUEST = bytes.fromhex(
    "000100582112a442b7e7a701bc34d686fa87dfae"
    "802200105354554e207465737420636c69656e74"
    "002400046e0001ff"
    "80290008932ff9b151263b36"
    "000600096576746a3a68367659202020"
    "000800149aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2"
    "80280004e57a3bcf"
)
SAMPLE_REQUEST_PASSWORD = b"VOkJxbRl1RmTxUk/WvJxBt"

# RFC 5769 section 2.2: sample IPv4 response (mapped address 192.0.2.1 port 32853).
SAMPLE_IPV4_RESPONSE = bytes.fromhex(
    "0101003c2112a442b7e7a701bc34d686fa87dfae"
    "8022000b7465737420766563746f7220"
    "002000080001a147e112a643"
    "000800142b91f599fd9e90c38c7489f92af9ba53f06be7d7"
    "80280004c07d4c96"
)

# RFC 5769 section 2.3: sample IPv6 response (2001:db8:1234:5678:11:2233:4455:6677 port 32853).
SAMPLE_IPV6_RESPONSE = bytes.fromhex(
    "010100482112a442b7e7a701bc34d686fa87dfae"
    "8022000b7465737420766563746f7220"
    "002000140002a1470113a9faa5d3f179bc25f4b5bed2b9d9"
    "00080014a382954e4be67bf11784c97c8292c275bfe3ed41"
    "80280004c8fb0b4c"
)

# RFC 5769 section 2.4: sample request with long-term authentication.
SAMPLE_LONG_TERM = bytes.fromhex(
    "000100602112a44278ad3433c6ad72c029da412e"
    "00060012e3839ee38388e383aae38383e382afe382b90000"
    "0015001c662f2f3439396b39353464364f4c33346f4c39465354767936347341"
    "0014000b6578616d706c652e6f726700"
    "00080014f67024656dd64a3e02b8e0712e85c9a28ca89666"
)


def test_rfc5769_sample_request() -> None:
    msg = parse_message(SAMPLE_REQUEST)
    assert (msg.method, msg.message_class) == (Method.BINDING, MessageClass.REQUEST)
    assert msg.transaction_id == bytes.fromhex("b7e7a701bc34d686fa87dfae")
    assert msg.get(Attr.SOFTWARE) == b"STUN test client"
    assert msg.get(Attr.USERNAME) == b"evtj:h6vY"
    assert msg.get(Attr.PRIORITY) == bytes.fromhex("6e0001ff")
    assert msg.check_integrity(SAMPLE_REQUEST_PASSWORD)  # short-term: the key is the password
    assert not msg.check_integrity(b"wrong password")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (SAMPLE_IPV4_RESPONSE, ("192.0.2.1", 32853)),
        (SAMPLE_IPV6_RESPONSE, ("2001:db8:1234:5678:11:2233:4455:6677", 32853)),
    ],
)
def test_rfc5769_responses(data: bytes, expected: tuple[str, int]) -> None:
    msg = parse_message(data)
    assert (msg.method, msg.message_class) == (Method.BINDING, MessageClass.SUCCESS)
    assert msg.get(Attr.SOFTWARE) == b"test vector"
    value = msg.get(Attr.XOR_MAPPED_ADDRESS)
    assert value is not None
    assert decode_xor_address(value, msg.transaction_id) == expected
    assert encode_xor_address(expected, msg.transaction_id) == value
    assert msg.check_integrity(SAMPLE_REQUEST_PASSWORD)


def test_rfc5769_long_term() -> None:
    msg = parse_message(SAMPLE_LONG_TERM)
    username = (msg.get(Attr.USERNAME) or b"").decode()
    assert username == "\u30de\u30c8\u30ea\u30c3\u30af\u30b9"
    assert msg.get(Attr.NONCE) == b"f//499k954d6OL34oL9FSTvy64sA"
    assert msg.get(Attr.REALM) == b"example.org"
    # The RFC's password "The\u00adM\u00aatr\u2170x" is "TheMatrIX" after SASLprep, as the RFC
    # states; our own credentials are ASCII, for which the preparation is the identity.
    assert msg.check_integrity(long_term_key(username, "example.org", "TheMatrIX"))
    assert not msg.check_integrity(long_term_key(username, "example.org", "TheMatrix"))


def test_reencoding_reproduces_the_vector() -> None:
    """Encoding the parsed attributes with the same key gives the RFC's bytes (modulo the
    padding bytes of USERNAME, which the RFC fills with spaces and we fill with zeros)."""
    msg = parse_message(SAMPLE_IPV4_RESPONSE)
    again = Message(msg.method, msg.message_class, msg.transaction_id, list(msg.attributes))
    data = again.encode(SAMPLE_REQUEST_PASSWORD)
    assert data[:32] == SAMPLE_IPV4_RESPONSE[:32]  # header and SOFTWARE before its pad byte
    assert parse_message(data).check_integrity(SAMPLE_REQUEST_PASSWORD)


def test_round_trip_with_both_integrity_attributes() -> None:
    key = hashlib.sha256(b"k").digest()
    msg = Message(Method.ALLOCATE, MessageClass.REQUEST, b"\x01" * 12)
    msg.add(Attr.USERNAME, b"123:kid:proj")
    msg.add(Attr.REQUESTED_TRANSPORT, b"\x11\0\0\0")
    data = msg.encode(key, sha1=True, sha256=True)
    parsed = parse_message(data)
    assert parsed.method == Method.ALLOCATE
    assert parsed.message_class == MessageClass.REQUEST
    assert parsed.attributes == msg.attributes
    assert set(parsed.integrity_offsets) == {
        Attr.MESSAGE_INTEGRITY,
        Attr.MESSAGE_INTEGRITY_SHA256,
    }
    assert parsed.check_integrity(key)
    assert not parsed.check_integrity(b"other")
    only_sha256 = parse_message(msg.encode(key, sha1=False, sha256=True))
    assert list(only_sha256.integrity_offsets) == [Attr.MESSAGE_INTEGRITY_SHA256]
    assert only_sha256.check_integrity(key)


def test_message_type_bits() -> None:
    # RFC 8489 figure 3: an Allocate error response is 0x0113, a Data indication 0x0017.
    error = Message(Method.ALLOCATE, MessageClass.ERROR, b"\0" * 12).encode(fingerprint=False)
    assert error[:2] == b"\x01\x13"
    data = Message(Method.DATA, MessageClass.INDICATION, b"\0" * 12).encode(fingerprint=False)
    assert data[:2] == b"\x00\x17"
    parsed = parse_message(error)
    assert (parsed.method, parsed.message_class) == (Method.ALLOCATE, MessageClass.ERROR)


def test_attributes_after_integrity_are_ignored() -> None:
    msg = parse_message(SAMPLE_REQUEST)
    names = [t for t, _ in msg.attributes]
    assert Attr.MESSAGE_INTEGRITY not in names
    assert Attr.FINGERPRINT not in names


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"\x00\x01\x00", "STUN message too short: 3 bytes, need at least 20"),
        (b"\xc0" + SAMPLE_REQUEST[1:], "not a STUN message: the two leading bits must be zero"),
        (
            SAMPLE_REQUEST[:4] + b"\0\0\0\0" + SAMPLE_REQUEST[8:],
            "bad magic cookie 0x00000000, expected 0x2112a442",
        ),
        (SAMPLE_REQUEST[:3] + b"\x57" + SAMPLE_REQUEST[4:], "is not a multiple of 4"),
        (SAMPLE_REQUEST[:-4], "STUN header says 88 bytes of attributes but 84 follow"),
        (SAMPLE_REQUEST[:-1] + b"\x00", "FINGERPRINT does not match the message"),
        (
            bytes.fromhex("000100082112a442") + b"\0" * 12 + bytes.fromhex("0006ffff00000000"),
            "attribute 0x0006 at offset 20 overruns the message (65535 bytes declared)",
        ),
        (
            bytes.fromhex("000100082112a442") + b"\0" * 12 + bytes.fromhex("8028000400000000"),
            "FINGERPRINT does not match the message",
        ),
        (
            bytes.fromhex("0001000c2112a442")
            + b"\0" * 12
            + bytes.fromhex("000800040000000000000000"),
            "attribute 0x0008 must be 20 bytes, got 4",
        ),
    ],
)
def test_decode_errors(data: bytes, error: str) -> None:
    with pytest.raises(StunDecodeError, match=error.replace("(", r"\(").replace(")", r"\)")):
        parse_message(data)


def test_attribute_value_errors() -> None:
    with pytest.raises(StunDecodeError, match="address attribute has family 0x03"):
        decode_address(b"\x00\x03\x00\x01\x01\x02\x03\x04")
    with pytest.raises(StunDecodeError, match="XOR address attribute too short: 2 bytes"):
        decode_xor_address(b"\0\1", b"\0" * 12)
    assert decode_error_code(encode_error_code(438, "Stale Nonce")) == (438, "Stale Nonce")


def test_channel_data_codec() -> None:
    assert encode_channel_data(0x4001, b"abcde") == b"\x40\x01\x00\x05abcde"
    assert encode_channel_data(0x4001, b"abcde", stream=True) == b"\x40\x01\x00\x05abcde\0\0\0"
    assert parse_channel_data(b"\x40\x01\x00\x02hi\0\0") == (0x4001, b"hi")
    with pytest.raises(StunDecodeError, match="channel number 0x8000 outside 0x4000-0x7FFF"):
        parse_channel_data(b"\x80\x00\x00\x00")
    with pytest.raises(StunDecodeError, match="ChannelData says 9 bytes but 2 follow"):
        parse_channel_data(b"\x40\x00\x00\x09hi")


def test_stream_framing() -> None:
    assert stream_frame_length(b"\x40\x00") is None
    assert stream_frame_length(b"\x40\x00\x00\x05") == 12  # padded to 4 on streams
    assert stream_frame_length(SAMPLE_REQUEST) == len(SAMPLE_REQUEST)
    with pytest.raises(StunDecodeError, match="stream byte 0x80 starts neither"):
        stream_frame_length(b"\x80\x00\x00\x00")
