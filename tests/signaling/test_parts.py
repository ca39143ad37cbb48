"""The signaling parts on their own: gRPC-Web frame codec, bounded stream queues (the overflow
policy, timers), the rate limiter, and the key directory over a real store."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import generate_latest

from pulsebeam.auth import PeerPolicy, parse_public_key
from pulsebeam.config import StoreConfig
from pulsebeam.control.store import Store
from pulsebeam.control.views import Actor
from pulsebeam.errors import GrpcStatus
from pulsebeam.signaling.directory import KeyDirectory
from pulsebeam.signaling.grpcweb import parse_grpc_timeout
from pulsebeam.signaling.grpcweb_frames import (
    decode_frames,
    decode_trailers,
    encode_message,
    encode_trailers,
)
from pulsebeam.signaling.limits import RateLimiter
from pulsebeam.signaling.metrics import SignalingMetrics
from pulsebeam.signaling.streams import Address, Closed, Hub, Stream, StreamClock, StreamTimes
from tests.signaling.grpcweb_client import parse_trailers, split_frames
from tests.signaling.sinks import RecordingSink, start


@given(st.lists(st.binary(max_size=300), max_size=5), st.integers(0, 20))
def test_frames_round_trip_and_split_anywhere(payloads: list[bytes], cut: int) -> None:
    body = b"".join(encode_message(p) for p in payloads) + encode_trailers(3, "bad: 100% ü")
    frames, rest = decode_frames(body)
    assert rest == b""
    assert [f.payload for f in frames[:-1]] == payloads
    assert decode_trailers(frames[-1].payload) == {
        "grpc-status": "3",
        "grpc-message": "bad: 100% ü",
    }
    # The tests' own codec agrees.
    own, _ = split_frames(body)
    assert parse_trailers(own[-1][1])["grpc-message"] == "bad: 100% ü"
    # A body cut inside the trailers frame keeps the whole data frames and the rest apart.
    data = b"".join(encode_message(p) for p in payloads)
    head = body[: len(body) - 1 - cut]
    partial, rest = decode_frames(head)
    assert [f.payload for f in partial] == payloads
    assert rest == head[len(data) :]


def test_trailers_reject_garbage() -> None:
    with pytest.raises(ValueError, match="no ':'"):
        decode_trailers(b"grpc-status 0\r\n")
    with pytest.raises(ValueError, match="not ASCII"):
        decode_trailers("grpc-status:é".encode())


def test_grpc_timeout_parsing() -> None:
    assert parse_grpc_timeout("900000m") == 900.0
    assert parse_grpc_timeout("2S") == 2.0
    assert parse_grpc_timeout("1H") == 3600.0
    assert parse_grpc_timeout("99999999n") == pytest.approx(0.099999999)
    too_long = ("123456789m", "1" + "0" * 399 + "H", "9" * 5000 + "m")  # over 8 digits
    not_ascii = ("\xb2m", "\u0661S", "\uff15S")  # str.isdigit() says yes to all three
    for bad in (None, "", "5", "m", "-5S", "5X", "1.5S", " 5S", "5S\n", *too_long, *not_ascii):
        assert parse_grpc_timeout(bad) is None, bad


def _stream(conn: int, queue_limit: int = 3) -> Stream:
    return Stream(
        address=Address("prj", "g", "p", conn),
        key_id="kid_0000000000000000",
        policy=PeerPolicy("*", "*"),
        expires_at=0,
        queue_limit=queue_limit,
    )


async def test_a_stream_writes_straight_to_a_ready_sink_in_order() -> None:
    stream = _stream(101)
    sink = RecordingSink()
    ended = start(stream, sink)
    assert stream.push(b"a")
    assert stream.push(b"b")
    assert sink.take() == [b"a", b"b"]
    assert stream.queued == 0  # nothing held by the server
    stream.close(GrpcStatus.UNAVAILABLE, "bye")
    assert sink.ended == Closed(GrpcStatus.UNAVAILABLE, "bye")
    assert ended == [stream]  # released once
    assert not stream.push(b"late")
    stream.close(GrpcStatus.OK, "again")  # a second close changes nothing
    assert ended == [stream]


async def test_a_stream_that_falls_behind_is_closed_and_freed() -> None:
    stream = _stream(100, queue_limit=3)
    sink = RecordingSink(ready=False)  # the client stopped reading: its socket is full
    start(stream, sink)
    assert all(stream.push(b"m%d" % i) for i in range(3))
    assert stream.queued == 3
    assert not stream.push(b"one too many")
    assert stream.closed is not None
    assert stream.closed.status == GrpcStatus.RESOURCE_EXHAUSTED
    assert sink.ended == stream.closed
    assert stream.queued == 0  # memory released at once
    assert not stream.push(b"later")
    assert sink.written == []


async def test_a_backlog_drains_in_order_when_the_sink_is_ready_again() -> None:
    stream = _stream(102, queue_limit=3)
    sink = RecordingSink(ready=False)
    start(stream, sink)
    stream.push(b"1")
    stream.push(b"2")
    sink.ready = True
    assert stream.push(b"3")  # behind the backlog, not before it
    assert sink.written == []
    stream.drain()
    assert sink.take() == [b"1", b"2", b"3"]


async def test_messages_pushed_before_start_wait_for_the_sink() -> None:
    stream = _stream(103)
    stream.push(b"early")  # a Join can arrive while the stream is still being announced
    sink = RecordingSink()
    start(stream, sink)
    assert sink.take() == [b"early"]


async def test_a_stream_closed_before_start_ends_at_start() -> None:
    stream = _stream(104)
    stream.close(GrpcStatus.UNAUTHENTICATED, "key deleted")  # revoked while it opened
    sink = RecordingSink()
    ended = start(stream, sink)
    assert sink.ended == Closed(GrpcStatus.UNAUTHENTICATED, "key deleted")
    assert ended == [stream]


async def test_the_stream_timer_pings_an_idle_stream_and_ends_it_at_expiry() -> None:
    stream = _stream(105)
    sink = RecordingSink()
    start(stream, sink, StreamTimes(ping_interval=0.05, expires_in=0.4, max_age=60))
    assert await sink.next(1) == b"PING"
    closed = await sink.wait_end(2)
    assert closed.status == GrpcStatus.UNAUTHENTICATED
    assert 2 <= sink.written.count(b"PING") + 1 <= 10  # about one per interval, bounded


async def test_traffic_holds_the_ping_back_and_rotation_ends_with_ok() -> None:
    stream = _stream(106)
    sink = RecordingSink()
    start(stream, sink, StreamTimes(ping_interval=0.2, expires_in=60, max_age=0.5))
    for _ in range(5):  # a message every 0.08 s: the stream is never idle for 0.2 s
        stream.push(b"msg")
        await asyncio.sleep(0.08)
    assert b"PING" not in sink.written
    closed = await sink.wait_end(2)
    assert closed == Closed(GrpcStatus.OK, "stream rotated: reopen Recv")


async def test_one_clock_serves_many_streams_and_lets_go_of_ended_ones() -> None:
    clock = StreamClock(0.02)
    streams = [_stream(2000 + i) for i in range(200)]
    sinks = [RecordingSink() for _ in streams]
    for i, (stream, sink) in enumerate(zip(streams, sinks, strict=True)):
        times = StreamTimes(ping_interval=0.1 + (i % 5) * 0.02, expires_in=60, max_age=60)
        stream.start(sink, times, clock=clock, ping=b"PING", on_end=lambda _: None)
    assert len(clock) == 200
    for stream in streams[::2]:
        stream.close(GrpcStatus.CANCELLED, "client went away")
    await asyncio.sleep(0.5)
    live = sinks[1::2]
    assert all(sink.written and set(sink.written) == {b"PING"} for sink in live)
    assert all(not sink.written for sink in sinks[::2])
    assert len(clock) == 100  # the ended streams left at their slot; the live ones re-joined


def test_per_message_figures_are_exposed_as_prometheus_metrics() -> None:
    metrics = SignalingMetrics()
    for seconds in (0.0004, 0.0007, 0.3, 2.0):
        metrics.call("Send", "OK")
        metrics.call_time("Send", seconds)
    metrics.call("Recv", "UNAUTHENTICATED")
    metrics.message("delivered")
    text = generate_latest(metrics.registry).decode()
    assert 'pulsebeam_signaling_calls_total{code="OK",method="Send"} 4.0' in text
    assert 'pulsebeam_signaling_calls_total{code="UNAUTHENTICATED",method="Recv"} 1.0' in text
    assert 'pulsebeam_signaling_messages_total{outcome="delivered"} 1.0' in text
    # Cumulative buckets: le=0.0005 holds one, le=0.001 two, le=0.5 three, +Inf all four.
    for bound, count in (("0.0005", 1), ("0.001", 2), ("0.1", 2), ("0.5", 3), ("+Inf", 4)):
        assert f'unary_seconds_bucket{{le="{bound}",method="Send"}} {count}.0' in text, bound
    assert 'pulsebeam_signaling_unary_seconds_count{method="Send"} 4.0' in text


def test_hub_replaces_same_connection_and_counts_per_project() -> None:
    hub = Hub()
    first, second, other = _stream(200), _stream(200), _stream(201)
    assert hub.add(first) is None
    assert hub.add(other) is None
    assert hub.add(second) is first
    assert first.closed is not None
    assert first.closed.status == GrpcStatus.OK
    assert hub.count("prj") == 2
    assert not hub.remove(first)  # already replaced: the new one stays
    assert hub.get(first.address) is second
    assert hub.newest("prj", "g", "p") in (second, other)
    assert hub.remove(second)
    assert hub.remove(other)
    assert hub.count("prj") == 0
    assert hub.group("prj", "g") == []


def test_hub_newest_skips_closed_streams_and_counts_per_peer() -> None:
    # A closed stream stays in the hub until its writer unregisters it; conn_id 0 must not
    # pick it over an older live connection of the same peer.
    hub = Hub()
    older, newer = _stream(300), _stream(301)
    newer.opened_at = older.opened_at + 1
    hub.add(older)
    hub.add(newer)
    assert hub.newest("prj", "g", "p") is newer
    assert hub.count_peer("prj", "g", "p") == 2
    newer.close(GrpcStatus.CANCELLED, "client went away")
    assert hub.newest("prj", "g", "p") is older
    older.close(GrpcStatus.CANCELLED, "client went away")
    assert hub.newest("prj", "g", "p") is None
    assert hub.remove(newer)
    assert hub.count_peer("prj", "g", "p") == 1
    assert hub.count_peer("prj", "g", "other") == 0
    assert hub.remove(older)
    assert hub.count_peer("prj", "g", "p") == 0


def test_rate_limiter_bursts_then_refills() -> None:
    now = [0.0]
    limiter = RateLimiter(2.0, 3, clock=lambda: now[0])
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("b")  # per key
    now[0] += 0.5
    assert limiter.allow("a")
    assert not limiter.allow("a")
    with pytest.raises(ValueError, match="rate"):
        RateLimiter(0, 1)


async def test_key_directory_over_a_real_store(tmp_path: Path) -> None:
    store = await Store.open(StoreConfig(data_dir=tmp_path))
    try:
        actor = Actor.admin_cli()
        account = await store.create_account("dir@example.test", "correct horse battery", actor)
        project = await store.create_project("p", account.id, actor)
        first = await store.create_key(project.id, "a", actor)
        now = [0.0]
        directory = KeyDirectory(store, miss_ttl_secs=5, clock=lambda: now[0])
        await directory.load()
        kid = first.key.kid
        key = directory.lookup(kid)
        assert key is not None
        assert key.public_bytes_raw() == parse_public_key(first.key.public_key).public_bytes_raw()
        assert directory.project_of(kid) == project.id
        # A key created later is found on a miss; an unknown one is remembered as unknown.
        second = await store.create_key(project.id, "b", actor)
        assert directory.lookup(second.key.kid) is None
        assert await directory.ensure(second.key.kid)
        assert directory.lookup(second.key.kid) is not None
        assert not await directory.ensure("kid_ffffffffffffffff")
        third = await store.create_key(project.id, "c", actor)
        directory._misses[third.key.kid] = now[0]  # as if it had been asked for just before
        assert not await directory.ensure(third.key.kid)  # still within the miss window
        now[0] += 6
        assert await directory.ensure(third.key.kid)
        # Reload keeps the same key object (the verifier's cache relies on identity) and
        # reports deleted keys.
        await store.delete_key(kid, actor)
        gone = await directory.load()
        assert gone == {kid}
        assert directory.lookup(kid) is None
        assert directory.lookup(second.key.kid) is not None
    finally:
        await store.close()


def test_public_names_are_pinned() -> None:
    import pulsebeam.proto
    import pulsebeam.signaling

    assert sorted(pulsebeam.signaling.__all__) == [
        "Address",
        "Caller",
        "GrpcWebEndpoint",
        "GrpcWebMiddleware",
        "Hub",
        "LocalRouter",
        "Presence",
        "Router",
        "SignalingService",
        "SignalingStore",
        "Stream",
    ]
    for name in pulsebeam.proto.__all__:
        assert getattr(pulsebeam.proto, name) is not None
    assert pulsebeam.proto.SERVICE_NAME == "pulsebeam.v1.Signaling"
    assert pulsebeam.proto.SendReq.DESCRIPTOR.full_name == "pulsebeam.v1.SendReq"


def test_schema_field_numbers_match_the_wire_facts() -> None:
    from pulsebeam import proto

    def wire(message: object) -> bytes:
        return message.SerializeToString()  # type: ignore[attr-defined,no-any-return]

    assert wire(proto.PeerInfo(group_id="g", peer_id="p", conn_id=5)) == b"\n\x01g\x12\x01p\x18\x05"
    assert wire(proto.MessageHeader(seqnum=1, reliable=True)) == b"8\x01@\x01"  # fields 7, 8
    sdp = proto.Signal(generation_counter=2, sdp=proto.Sdp(kind=proto.SDP_KIND_OFFER, sdp="x"))
    assert wire(sdp) == b"\x08\x02J\x05\x08\x01\x12\x01x"  # sdp is field 9
    batch = proto.Signal(ice_candidate_batch=proto.ICECandidateBatch())
    assert wire(batch) == b"Z\x00"  # field 11
    assert wire(proto.ICECandidate(sdp_m_line_index=0)) == b"\x10\x00"  # optional: presence kept
    assert wire(proto.MessagePayload(ping=proto.Ping())) == b"*\x00"  # field 5
    metrics = proto.AnalyticsMetrics(timestamp_us=-1, quality_score=50, rtt_us=1)
    assert wire(metrics) == b"\x08\x01\x88\x01\x64\x90\x01\x02"  # sint64, fields 1, 17, 18
    ice = proto.IceServer(urls=["turn:h"], username="u", credential="c")
    assert wire(ice) == b"\n\x06turn:h\x12\x01u\x1a\x01c"
    assert wire(proto.AckRange(seqnum_start=1, seqnum_end=2)) == b"\x08\x01\x10\x02"
