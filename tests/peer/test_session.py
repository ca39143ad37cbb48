"""The session protocol on real aiortc, two sessions joined by an in-process wire.

The wire hands each message to the other session exactly as the server's router would (it is
the routing step, nothing else), so these tests can force what a real server run cannot:
duplicates, offer collisions, stale generations. Host candidates are 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiortc import MediaStreamTrack, RTCConfiguration, RTCIceServer
from aiortc.mediastreams import VideoStreamTrack
from av import VideoFrame

from pulsebeam.peer import session as session_module
from pulsebeam.peer.identity import PeerInfo
from pulsebeam.peer.prepared import PreparedConnection
from pulsebeam.peer.session import Session
from pulsebeam.proto import (
    SDP_KIND_ANSWER,
    SDP_KIND_OFFER,
    ICECandidateBatch,
    Message,
    MessageHeader,
    MessagePayload,
    Sdp,
    Signal,
)
from tests.peer.conftest import StunResponder

TIMEOUT = 10.0


class Wire:
    """One side's link: forwards what its session sends to the other side's session."""

    def __init__(self, info: PeerInfo, configuration: RTCConfiguration, copies: int = 1) -> None:
        self._info = info
        self.configuration = configuration
        self.copies = copies
        self.remote: Session | None = None
        self.sent: list[Message] = []
        self.sent_at: list[float] = []  # loop times
        self.closed: list[Session] = []

    @property
    def info(self) -> PeerInfo:
        return self._info

    async def send_message(self, message: Message, *, bye: bool = False) -> None:
        self.sent.append(message)
        self.sent_at.append(asyncio.get_running_loop().time())
        assert self.remote is not None
        for _ in range(self.copies):
            copy = Message()
            copy.CopyFrom(message)
            self.remote.deliver(copy)

    def session_closed(self, session: Session) -> None:
        self.closed.append(session)


def pair(
    config: RTCConfiguration, copies: int = 1, bobs: PreparedConnection | None = None
) -> tuple[Session, Session, Wire, Wire]:
    """Polite alice and impolite bob (who makes the first offer, on ``bobs`` if given)."""
    alice, bob = PeerInfo("g", "alice", 1000), PeerInfo("g", "bob", 2000)
    wire_a, wire_b = Wire(alice, config, copies), Wire(bob, config, copies)
    session_a = Session(wire_a, bob, config)
    session_b = Session(wire_b, alice, config, bobs)
    wire_a.remote, wire_b.remote = session_b, session_a
    return session_a, session_b, wire_a, wire_b


async def gathered(config: RTCConfiguration) -> PreparedConnection:
    """A connection that has gathered its candidates (as a pool's spare has)."""
    connection = PreparedConnection(config)
    await connection.ready()
    return connection


def slow_stun(stun_server: StunResponder, delay: float = 0.3) -> RTCConfiguration:
    """ICE with ``stun_server`` answering after ``delay`` s: gathering is still on meanwhile."""
    stun_server.delay = delay
    return RTCConfiguration([RTCIceServer(stun_server.url)])


async def connected(*sessions: Session) -> None:
    """Wait (bounded) until every one of ``sessions`` is connected."""
    async with asyncio.timeout(TIMEOUT):
        for session in sessions:
            await session.wait_connected()


async def close_all(*sessions: Session) -> None:
    for session in sessions:
        await session.close()


async def test_sessions_connect_and_exchange_data(loopback_ice: RTCConfiguration) -> None:
    a, b, wire_a, wire_b = pair(loopback_ice)
    try:
        assert b.impolite
        assert not a.impolite
        async with asyncio.timeout(TIMEOUT):
            await a.wait_connected()
            await b.wait_connected()
            chat = a.create_data_channel("chat")
            incoming = await b.data_channels().get()
            await chat.wait_open()
            chat.send("hello")
            assert incoming.label == "chat"
            assert await incoming.receive() == "hello"
        assert a.path == "direct"
        # Polite alice never offered first: her first message was a Join, bob's an offer.
        assert wire_a.sent[0].payload.WhichOneof("payload_type") == "join"
        assert wire_b.sent[0].payload.signal.sdp.kind == SDP_KIND_OFFER
        # Then a batch of candidates (see the two tests below for which).
        async with asyncio.timeout(TIMEOUT):
            while len(wire_b.sent) < 2:  # noqa: ASYNC110 - the wire has no event of its own
                await asyncio.sleep(0.02)
        assert wire_b.sent[1].payload.signal.WhichOneof("data") == "ice_candidate_batch"
        assert [m.header.seqnum for m in wire_b.sent] == list(range(len(wire_b.sent)))
    finally:
        await close_all(a, b)


async def test_an_offer_made_while_gathering_goes_at_once_and_its_candidates_follow(
    loopback_ice: RTCConfiguration, stun_server: StunResponder
) -> None:
    # The STUN server answers after 0.3 s, so bob's gathering is still on when he offers.
    a, b, wire_a, wire_b = pair(slow_stun(stun_server))
    try:
        await connected(a, b)
        offer, batch = (m.payload.signal for m in wire_b.sent[:2])
        assert offer.sdp.kind == SDP_KIND_OFFER
        assert "a=candidate:" not in offer.sdp.sdp
        assert "a=end-of-candidates" not in offer.sdp.sdp
        # The batch, once gathering ended: every candidate, then the end of them per m-line.
        candidates = list(batch.ice_candidate_batch.candidates)
        ends = [c for c in candidates if not c.candidate]
        assert candidates[-len(ends) :] == ends
        assert [(e.sdp_mid, e.sdp_m_line_index) for e in ends] == [("0", 0)]
        assert [c for c in candidates if c.candidate.endswith("typ host")]
        # Alice's answer to an offer without candidates waited for her own gathering (going
        # early would gain nothing), so it carries her candidates.
        answer = next(m.payload.signal.sdp for m in wire_a.sent if m.payload.signal.HasField("sdp"))
        assert "a=candidate:" in answer.sdp
        assert "a=end-of-candidates" in answer.sdp
    finally:
        await close_all(a, b)


async def test_an_answer_to_an_offer_with_candidates_goes_while_gathering(
    loopback_ice: RTCConfiguration, stun_server: StunResponder
) -> None:
    # Bob offers from a gathered connection; Alice's STUN server answers after 0.3 s.
    a, b, wire_a, _ = pair(slow_stun(stun_server), bobs=await gathered(loopback_ice))
    try:
        await connected(a, b)
        assert a.path == "direct"
        (answer, answered_at), (batch, batch_at) = [
            (m.payload.signal, at)
            for m, at in zip(wire_a.sent, wire_a.sent_at, strict=True)
            if m.payload.HasField("signal")
        ]
        # The answer left before Alice's gathering could end (aioice reveals no candidate
        # before then); her ICE waited for it, checking Bob's candidates from the offer.
        assert answer.sdp.kind == SDP_KIND_ANSWER
        assert answered_at < stun_server.answered_at[0] <= batch_at
        assert "a=candidate:" not in answer.sdp.sdp
        candidates = list(batch.ice_candidate_batch.candidates)
        assert [c for c in candidates if c.candidate.endswith("typ host")]
        assert candidates[-1].candidate == ""  # the end mark
    finally:
        await close_all(a, b)


async def test_an_offer_made_after_gathering_carries_its_candidates(
    loopback_ice: RTCConfiguration,
) -> None:
    a, b, _, wire_b = pair(loopback_ice, bobs=await gathered(loopback_ice))
    try:
        async with asyncio.timeout(TIMEOUT):
            await a.wait_connected()
            await b.wait_connected()
            while len(wire_b.sent) < 2:  # noqa: ASYNC110 - the wire has no event of its own
                await asyncio.sleep(0.02)
        offer, batch = (m.payload.signal for m in wire_b.sent[:2])
        assert "a=candidate:" in offer.sdp.sdp
        assert "a=end-of-candidates" in offer.sdp.sdp
        # The batch repeats them 100 ms later for the browser SDK (as the official SDK
        # flushes its batches), and has no end mark: the SDP said it.
        repeated = [c.candidate for c in batch.ice_candidate_batch.candidates]
        assert repeated
        assert all(("a=" + c) in offer.sdp.sdp for c in repeated)
    finally:
        await close_all(a, b)


async def test_duplicated_messages_are_dropped(loopback_ice: RTCConfiguration) -> None:
    a, b, _, _ = pair(loopback_ice, copies=2)
    try:
        await connected(a, b)
    finally:
        await close_all(a, b)


async def test_offer_collision_is_resolved(
    loopback_ice: RTCConfiguration, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="pulsebeam.peer.session")
    a, b, _, _ = pair(loopback_ice)
    try:
        async with asyncio.timeout(TIMEOUT):
            await a.wait_connected()
            await b.wait_connected()
            # Both add a track at once: both offer, bob (impolite) ignores alice's offer and
            # alice rolls hers back, answers, then offers her track again.
            a.add_track(VideoStreamTrack())
            b.add_track(VideoStreamTrack())
            track_at_a: MediaStreamTrack = await a.tracks().get()
            track_at_b: MediaStreamTrack = await b.tracks().get()
            assert track_at_a.kind == track_at_b.kind == "video"
            frame = await track_at_b.recv()
            assert isinstance(frame, VideoFrame)
            assert frame.width > 0
        assert a.pc.signalingState == b.pc.signalingState == "stable"
        assert "ignoring a colliding offer" in caplog.text  # the collision did happen
    finally:
        await close_all(a, b)


async def test_generation_counter_rules(loopback_ice: RTCConfiguration) -> None:
    a, b, _, _ = pair(loopback_ice)
    try:
        async with asyncio.timeout(TIMEOUT):
            await a.wait_connected()

        def signal(generation: int, seqnum: int, data: Signal) -> Message:
            data.generation_counter = generation
            header = MessageHeader(
                src=b.local.to_proto(), dst=a.local.to_proto(), seqnum=seqnum, reliable=True
            )
            return Message(header=header, payload=MessagePayload(signal=data))

        a.deliver(signal(3, 1000, Signal(ice_candidate_batch=ICECandidateBatch())))
        await asyncio.sleep(0.1)
        assert a.generation == 3
        stale = Signal(sdp=Sdp(kind=SDP_KIND_OFFER, sdp="v=0 garbage"))
        a.deliver(signal(2, 1001, stale))
        await asyncio.sleep(0.1)
        assert a.generation == 3
        assert a.pc.signalingState == "stable"
        assert a.connection_state == "connected"
    finally:
        await close_all(a, b)


class Void:
    """A link to a peer that left: what the session sends goes nowhere."""

    def __init__(self, info: PeerInfo, configuration: RTCConfiguration) -> None:
        self.info = info
        self.configuration = configuration
        self.sent: list[Message] = []

    async def send_message(self, message: Message, *, bye: bool = False) -> None:
        self.sent.append(message)

    def session_closed(self, session: Session) -> None:
        pass


@pytest.mark.parametrize("impolite", [False, True])
async def test_a_session_the_other_side_never_answers_is_closed_after_the_setup_timeout(
    loopback_ice: RTCConfiguration, monkeypatch: pytest.MonkeyPatch, impolite: bool
) -> None:
    """A Join, then nothing (the other peer left, or its policy hides this one): the session
    closes with a Bye, whichever side it would have offered from."""
    monkeypatch.setattr(session_module, "SETUP_TIMEOUT", 0.5)
    me = PeerInfo("g", "bob" if impolite else "alice", 1500)
    gone = PeerInfo("g", "carol", 1000 if impolite else 2000)
    void = Void(me, loopback_ice)
    session = Session(void, gone, loopback_ice)
    assert session.impolite is impolite
    async with asyncio.timeout(TIMEOUT):
        reason = await session.wait_closed()
    assert reason == f"no offer or answer from g/carol#{gone.conn_id} in 0.5 s"
    first = void.sent[0].payload
    if impolite:
        assert first.signal.sdp.kind == SDP_KIND_OFFER
    else:
        assert first.HasField("join")
    assert void.sent[-1].payload.HasField("bye")


async def test_bye_closes_the_other_side(loopback_ice: RTCConfiguration) -> None:
    a, b, wire_a, wire_b = pair(loopback_ice)
    async with asyncio.timeout(TIMEOUT):
        await a.wait_connected()
        await a.close("done here")
        assert await b.wait_closed() == "the other peer said bye"
    bye = wire_a.sent[-1]
    assert bye.payload.WhichOneof("payload_type") == "bye"
    assert not bye.header.reliable  # Join and Bye go unreliable, signals reliable
    assert all(m.header.reliable for m in wire_a.sent if m.payload.HasField("signal"))
    assert not any(m.payload.HasField("bye") for m in wire_b.sent)  # no answer to a Bye
    assert a.close_reason == "done here"
    assert wire_b.closed == [b]
    assert b.connection_state == "closed"
    states = [s async for s in b.connection_states()]
    assert states[-1] == "closed"
    assert "connected" in states
    with pytest.raises(ValueError, match="reserved"):
        a.create_data_channel("__internal")


async def test_tracks_added_before_the_first_exchange(loopback_ice: RTCConfiguration) -> None:
    a, b, _, _ = pair(loopback_ice)
    try:
        # Polite alice adds hers before bob's first offer (which cannot include it), bob his
        # before making that offer: both arrive, alice's through a second offer of hers.
        a.add_track(VideoStreamTrack())
        b.add_track(VideoStreamTrack())
        async with asyncio.timeout(TIMEOUT):
            for session in (a, b):
                track = await session.tracks().get()
                frame = await track.recv()  # media flows, not just the m-line
                assert isinstance(frame, VideoFrame)
                assert frame.width > 0
    finally:
        await close_all(a, b)


async def test_a_description_whose_bundle_leads_with_media_is_followed_by_its_candidates(
    loopback_ice: RTCConfiguration,
) -> None:
    # Bob's track makes his offer lead with video: aiortc gathers on that m-line's transport
    # inside setLocalDescription, so each side's description goes without candidates and a
    # batch with the end marks follows (without them the other side's ICE could never fail).
    a, b, wire_a, wire_b = pair(loopback_ice)
    try:
        b.add_track(VideoStreamTrack())
        await connected(a, b)
        for wire, other in ((wire_a, b), (wire_b, a)):
            signals = [m.payload.signal for m in wire.sent if m.payload.HasField("signal")]
            first, second = signals[:2]
            assert first.sdp.sdp.index("m=video") < first.sdp.sdp.index("m=application")
            assert "a=candidate:" not in first.sdp.sdp
            marks = [c for c in second.ice_candidate_batch.candidates if not c.candidate]
            assert [(m.sdp_mid, m.sdp_m_line_index) for m in marks] == [("0", 0), ("1", 1)]
            sctp = other.pc.sctp
            assert sctp is not None
            assert sctp.transport.transport._connection._remote_candidates_end
    finally:
        await close_all(a, b)


async def test_an_offer_from_a_gathered_connection_whose_bundle_leads_with_media(
    loopback_ice: RTCConfiguration,
) -> None:
    # Bob's connection has gathered on its data transport, but his track's m-line leads the
    # BUNDLE: its transport gathers inside setLocalDescription, so his offer is incomplete
    # (the data m-line alone says end-of-candidates) and a batch with both end marks follows.
    a, b, _, wire_b = pair(loopback_ice, bobs=await gathered(loopback_ice))
    try:
        b.add_track(VideoStreamTrack())
        async with asyncio.timeout(TIMEOUT):
            await a.wait_connected()
        offer, batch = (m.payload.signal for m in wire_b.sent[:2])
        assert offer.sdp.sdp.index("m=video") < offer.sdp.sdp.index("m=application")
        marks = [c for c in batch.ice_candidate_batch.candidates if not c.candidate]
        assert [(m.sdp_mid, m.sdp_m_line_index) for m in marks] == [("0", 0), ("1", 1)]
    finally:
        await close_all(a, b)


async def test_a_dead_transport_is_replaced_by_an_ice_restart(
    loopback_ice: RTCConfiguration,
) -> None:
    # Only alice's side dies (as when her network changes): she restarts on a new connection
    # under generation 1, bob takes the higher generation's offer on a new connection too, the
    # channel objects of both sides carry on and alice's track is sent again.
    a, b, _, _ = pair(loopback_ice)
    try:
        async with asyncio.timeout(TIMEOUT):
            chat = a.create_data_channel("chat")
            at_bob = await b.data_channels().get()
            await chat.wait_open()
            a.add_track(VideoStreamTrack())
            await (await b.tracks().get()).recv()
            old_pc = a.pc
            states = a.connection_states()
            sctp = old_pc.sctp
            assert sctp is not None
            await sctp.transport.transport._connection.close()  # the ICE path is gone
            seen: list[str] = []
            async for state in states:
                seen.append(state)
                if "failed" in seen and state == "connected":
                    break
            assert a.pc is not old_pc
            assert (a.generation, b.generation, a.ice_restarts, b.ice_restarts) == (1, 1, 1, 0)
            await chat.wait_open()
            await at_bob.wait_open()
            chat.send("again")
            assert await at_bob.receive() == "again"
            at_bob.send("back")
            assert await chat.receive() == "back"
            frame = await (await b.tracks().get()).recv()  # a new remote track, frames flowing
            assert isinstance(frame, VideoFrame)
        assert not a.closed
        assert not b.closed
    finally:
        await close_all(a, b)
