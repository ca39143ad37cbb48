"""The SDK's hand-written protobuf codec against the real protobuf runtime: bytes the JS writes
are exactly what ``SerializeToString`` writes, and what Python writes decodes in JS to the same
message (checked with fixed cases and with generated ones)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.protobuf.message import Message as ProtoMessage
from hypothesis import given, settings
from hypothesis import strategies as st

from pulsebeam import proto

CLI = Path(__file__).with_name("js") / "codec_cli.mjs"


class Codec:
    """The JS codec in a node process, one JSON line per request."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self._process = process

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        self._process.stdin.write(json.dumps(request) + "\n")
        self._process.stdin.flush()
        reply: dict[str, Any] = json.loads(self._process.stdout.readline())
        if "error" in reply:
            raise ValueError(reply["error"])
        return reply

    def encode(self, type_name: str, value: dict[str, Any]) -> bytes:
        return bytes.fromhex(self._ask({"op": "encode", "type": type_name, "value": value})["hex"])

    def decode(self, type_name: str, data: bytes) -> dict[str, Any]:
        value: dict[str, Any] = self._ask({"op": "decode", "type": type_name, "hex": data.hex()})[
            "value"
        ]
        return value


@pytest.fixture(scope="module")
def codec() -> Iterator[Codec]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    with subprocess.Popen(
        [node, str(CLI)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as process:
        try:
            yield Codec(process)
        finally:
            assert process.stdin is not None
            process.stdin.close()
            process.wait(timeout=10)


def check_both_ways(codec: Codec, message: ProtoMessage) -> None:
    type_name = type(message).__name__
    wire = message.SerializeToString()
    decoded = codec.decode(type_name, wire)
    assert json_format.ParseDict(decoded, type(message)()) == message
    # What JS writes from that object is byte for byte what protobuf writes.
    assert codec.encode(type_name, decoded) == wire


def peer(group: str, peer_id: str, conn: int) -> proto.PeerInfo:
    return proto.PeerInfo(group_id=group, peer_id=peer_id, conn_id=conn)


CASES: list[ProtoMessage] = [
    proto.PrepareReq(),
    proto.PrepareResp(
        ice_servers=[
            proto.IceServer(urls=["stun:127.0.0.1:3478"]),
            proto.IceServer(
                urls=["turn:127.0.0.1:3478?transport=udp", "turn:127.0.0.1:3478?transport=tcp"],
                username="1764380000:kid_0123456789abcdef",
                credential="c2VjcmV0",
            ),
            proto.IceServer(urls=["turn:h"], username="", credential=""),
        ]
    ),
    proto.RecvReq(src=peer("room", "alice", 4_294_967_295)),
    proto.SendReq(
        msg=proto.Message(
            header=proto.MessageHeader(
                src=peer("room", "alice", 17), dst=peer("room", "bob", 0), seqnum=0
            ),
            payload=proto.MessagePayload(join=proto.Join()),
        )
    ),
    proto.RecvResp(
        msg=proto.Message(
            header=proto.MessageHeader(
                src=peer("r", "b", 99), dst=peer("r", "a", 17), seqnum=3, reliable=True
            ),
            payload=proto.MessagePayload(
                signal=proto.Signal(
                    generation_counter=1,
                    sdp=proto.Sdp(kind=proto.SDP_KIND_ANSWER, sdp="v=0\r\no=- 1 2 IN IP4 0\r\n"),
                )
            ),
        )
    ),
    proto.RecvResp(msg=proto.Message(payload=proto.MessagePayload(ping=proto.Ping()))),
    proto.MessagePayload(bye=proto.Bye()),
    proto.MessagePayload(ack=proto.Ack(ack_ranges=[proto.AckRange(seqnum_start=0, seqnum_end=5)])),
    proto.Signal(
        ice_candidate_batch=proto.ICECandidateBatch(
            candidates=[
                proto.ICECandidate(candidate="candidate:1 1 udp 5 127.0.0.1 9 typ relay"),
                proto.ICECandidate(candidate="c", sdp_m_line_index=0, sdp_mid="0", username="u"),
                proto.ICECandidate(candidate="ü", password="p"),
            ]
        )
    ),
    proto.AnalyticsReportReq(
        reports=[
            proto.AnalyticsReport(
                tags=proto.AnalyticsTags(src=peer("g", "a", 20), dst=peer("g", "b", 21)),
                metrics=[
                    proto.AnalyticsMetrics(
                        timestamp_us=1_764_380_000_123_456,
                        ice_connection_type=3,  # type: ignore[arg-type]
                        rtt_us=-5,
                        quality_score=0,
                    ),
                    proto.AnalyticsMetrics(timestamp_us=-1, error_event=7),  # type: ignore[arg-type]
                ],
            )
        ]
    ),
]


@pytest.mark.parametrize("message", CASES, ids=lambda m: type(m).__name__)
def test_fixed_messages_round_trip(codec: Codec, message: ProtoMessage) -> None:
    check_both_ways(codec, message)


ids = st.text(alphabet="abcXYZ019_-", min_size=1, max_size=36)
uint32 = st.integers(min_value=0, max_value=2**32 - 1)
candidates = st.builds(
    proto.ICECandidate,
    candidate=st.text(max_size=80),
    sdp_m_line_index=st.none() | uint32,
    sdp_mid=st.none() | st.text(max_size=5),
    username=st.none() | st.text(max_size=8),
)


@st.composite
def messages(draw: st.DrawFn) -> proto.Message:
    header = proto.MessageHeader(
        src=peer(draw(ids), draw(ids), draw(uint32)),
        dst=peer(draw(ids), draw(ids), draw(uint32)),
        seqnum=draw(uint32),
        reliable=draw(st.booleans()),
    )
    kind = draw(st.sampled_from(["sdp", "batch", "join", "bye"]))
    if kind == "sdp":
        sdp = proto.Sdp(kind=draw(st.integers(0, 4)), sdp=draw(st.text(max_size=200)))  # type: ignore[arg-type]
        payload = proto.MessagePayload(
            signal=proto.Signal(generation_counter=draw(uint32), sdp=sdp)
        )
    elif kind == "batch":
        batch = proto.ICECandidateBatch(candidates=draw(st.lists(candidates, max_size=4)))
        payload = proto.MessagePayload(signal=proto.Signal(ice_candidate_batch=batch))
    elif kind == "join":
        payload = proto.MessagePayload(join=proto.Join())
    else:
        payload = proto.MessagePayload(bye=proto.Bye())
    return proto.Message(header=header, payload=payload)


@settings(max_examples=150, deadline=None)
@given(message=messages())
def test_generated_messages_round_trip(codec: Codec, message: proto.Message) -> None:
    check_both_ways(codec, message)


def test_bad_bytes_are_refused_not_misread(codec: Codec) -> None:
    # A header field that claims 9 bytes but has 1: protobuf itself refuses it too.
    data = b"\x0a\x09\x0a"
    with pytest.raises(DecodeError):
        proto.Message.FromString(data)
    with pytest.raises(ValueError, match="truncated"):
        codec.decode("Message", data)
