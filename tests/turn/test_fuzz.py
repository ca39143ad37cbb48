"""Fuzzing: the codec only ever raises its own error, and a flood of garbage leaves the server
able to serve the next client."""

from __future__ import annotations

import asyncio
import contextlib
import random
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from pulsebeam.turn.attributes import decode_xor_address
from pulsebeam.turn.channeldata import parse_channel_data, stream_frame_length
from pulsebeam.turn.client import TurnClient
from pulsebeam.turn.server import TurnServer
from pulsebeam.turn.stun import StunDecodeError, parse_message
from tests.turn.conftest import credential
from tests.turn.test_stun_codec import SAMPLE_LONG_TERM, SAMPLE_REQUEST

COOKIE = struct.pack("!I", 0x2112A442)


def _plausible() -> st.SearchStrategy[bytes]:
    """Messages with a valid header and random attribute bytes (reach deep into the parser)."""

    def build(msg_type: int, tid: bytes, body: bytes) -> bytes:
        return struct.pack("!HH", msg_type & 0x3FFF, len(body)) + COOKIE + tid + body

    return st.builds(
        build,
        st.integers(0, 0xFFFF),
        st.binary(min_size=12, max_size=12),
        st.binary(max_size=200).map(lambda b: b[: len(b) - len(b) % 4]),
    )


def _mutated() -> st.SearchStrategy[bytes]:
    def mutate(base: bytes, flips: list[tuple[int, int]]) -> bytes:
        data = bytearray(base)
        for index, value in flips:
            data[index % len(data)] = value
        return bytes(data)

    return st.builds(
        mutate,
        st.sampled_from([SAMPLE_REQUEST, SAMPLE_LONG_TERM]),
        st.lists(st.tuples(st.integers(0, 1000), st.integers(0, 255)), max_size=4),
    )


@settings(max_examples=600, deadline=None)
@given(st.one_of(st.binary(max_size=300), _plausible(), _mutated()))
def test_parser_raises_only_its_own_error(data: bytes) -> None:
    try:
        msg = parse_message(data)
    except StunDecodeError:
        pass
    else:
        msg.check_integrity(b"key")
        msg.unknown_required()
        for _, value in msg.attributes:
            with contextlib.suppress(StunDecodeError):
                decode_xor_address(value, msg.transaction_id)
    for parse in (parse_channel_data, stream_frame_length):
        with contextlib.suppress(StunDecodeError):
            parse(data)


def _garbage(rng: random.Random) -> bytes:
    kind = rng.randrange(4)
    if kind == 0:
        return rng.randbytes(rng.randrange(0, 600))
    if kind == 1:  # a ChannelData-looking frame from an unknown client
        return b"\x40" + rng.randbytes(rng.randrange(3, 200))
    if kind == 2:  # a STUN header with random attributes
        body = rng.randbytes(rng.randrange(0, 50) * 4)
        return (
            struct.pack("!HH", rng.randrange(0x4000), len(body)) + COOKIE + rng.randbytes(12) + body
        )
    data = bytearray(SAMPLE_REQUEST)
    data[rng.randrange(len(data))] = rng.randrange(256)
    return bytes(data)


async def test_garbage_flood_then_an_allocation(turn: TurnServer) -> None:
    assert turn.udp_address is not None
    loop = asyncio.get_running_loop()
    flood, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, remote_addr=turn.udp_address
    )
    rng = random.Random(4)
    try:
        for i in range(10_000):
            flood.sendto(_garbage(rng))
            if i % 50 == 0:
                await asyncio.sleep(0.001)  # pace it so the kernel delivers most of it
    finally:
        flood.close()
    # Most of the flood reached the parser (about 3/4 of it is malformed by construction; the
    # kernel may drop some when the server lags).
    malformed = turn.metrics.registry.get_sample_value("pulsebeam_turn_malformed_total")
    assert malformed is not None
    assert malformed >= 3000
    client = await TurnClient.connect("udp", turn.udp_address)
    try:
        cred = credential()
        answer = await client.allocate(cred.username, cred.password)
        assert client.relayed_address(answer)[0] == "127.0.0.1"
        assert len(turn.manager.allocations) == 1
    finally:
        client.close()


async def test_stream_garbage_closes_only_that_connection(turn: TurnServer) -> None:
    """Over TCP a byte that starts neither STUN nor ChannelData ends the connection; other
    clients are unaffected."""
    assert turn.tcp_address is not None
    reader, writer = await asyncio.open_connection(*turn.tcp_address)
    try:
        writer.write(b"\x80" + random.Random(5).randbytes(200))
        assert await asyncio.wait_for(reader.read(), 3) == b""  # closed by the server
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    client = await TurnClient.connect("tcp", turn.tcp_address)
    try:
        cred = credential()
        await client.allocate(cred.username, cred.password)
    finally:
        client.close()
