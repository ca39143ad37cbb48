"""The SDK's pure parts: seqnum de-duplication, backoff, token identity, candidates, errors."""

from __future__ import annotations

import asyncio
import time

import pytest

from pulsebeam.auth import AccessToken, KeyPair, PeerClaims, PeerPolicy
from pulsebeam.errors import (
    GrpcStatus,
    InvalidArgumentError,
    MalformedTokenError,
    NotFoundError,
    PermissionDeniedError,
    TokenError,
    UnavailableError,
)
from pulsebeam.peer.backoff import Backoff
from pulsebeam.peer.candidates import (
    candidate_key,
    end_of_candidates,
    local_candidates,
    parse_remote,
)
from pulsebeam.peer.errors import SignalingError, is_fatal, status_error
from pulsebeam.peer.events import EventStream
from pulsebeam.peer.identity import PeerInfo, TokenIdentity, is_impolite
from pulsebeam.peer.prepared import PreparedConnection
from pulsebeam.peer.reliable import SeqnumWindow
from pulsebeam.peer.restart import (
    FIRST_RESTART_DELAY,
    ICE_RESTART_DEBOUNCE,
    MAX_ICE_RESTARTS,
    POLITE_RESTART_DELAY,
    RestartPolicy,
)
from pulsebeam.peer.tokens import Tokens
from pulsebeam.proto import ICECandidate

SDP = """v=0
o=- 1 1 IN IP4 0.0.0.0
s=-
t=0 0
a=group:BUNDLE 0 1
m=video 9 UDP/TLS/RTP/SAVPF 96
a=mid:0
a=ice-ufrag:abcd
a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host
a=candidate:2 1 udp 16777215 127.0.0.1 6000 typ relay raddr 127.0.0.1 rport 5001
m=application 9 UDP/DTLS/SCTP webrtc-datachannel
a=mid:1
a=ice-ufrag:abcd
a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host
"""


def mint(peer_id: str, ttl: int = 60, group: str = "g1") -> str:
    pair = KeyPair.generate()
    claims = PeerClaims(group, peer_id)
    claims.set_allow_policy(PeerPolicy("*", "*"))
    return AccessToken(pair.api_key, pair.api_secret).create_token(claims, ttl)


def test_seqnum_window_drops_repeats_and_far_old() -> None:
    window = SeqnumWindow(size=4)
    assert [window.add(s) for s in (0, 1, 1, 3, 2, 2)] == [True, True, False, True, True, False]
    assert window.add(10)
    assert not window.add(5)  # behind the window: treated as already seen
    assert window.add(9)


def test_seqnum_window_wraps_like_uint32() -> None:
    window = SeqnumWindow()
    assert window.add(2**32 - 1)
    assert window.add(0)
    assert not window.add(2**32 - 1)
    assert not window.add(0)


def test_backoff_doubles_to_cap_with_jitter_and_resets() -> None:
    backoff = Backoff(0.25, 1.0)
    delays = [backoff.next_delay() for _ in range(6)]
    assert 0.125 <= delays[0] <= 0.25
    assert 0.25 <= delays[1] <= 0.5
    assert all(0.5 <= d <= 1.0 for d in delays[3:])
    backoff.reset()
    assert backoff.next_delay() <= 0.25
    with pytest.raises(ValueError, match="0 < base <= cap"):
        Backoff(2.0, 1.0)


def test_roles_are_complementary() -> None:
    a, b = PeerInfo("g", "alice", 100), PeerInfo("g", "bob", 200)
    assert is_impolite(b, a)
    assert not is_impolite(a, b)
    tie_a, tie_b = PeerInfo("g", "alice", 7), PeerInfo("g", "bob", 7)
    assert is_impolite(tie_b, tie_a) != is_impolite(tie_a, tie_b)


def test_new_connection_ids_avoid_the_reserved_range() -> None:
    assert all(PeerInfo.new_connection("g", "p").conn_id > 16 for _ in range(200))


def test_token_identity_and_update_rules() -> None:
    token = mint("alice", ttl=100)
    identity = TokenIdentity.of(token)
    assert (identity.group_id, identity.peer_id) == ("g1", "alice")
    assert identity.expires_at == pytest.approx(time.time() + 100, abs=2)
    tokens = Tokens(token)
    assert 70 <= tokens.seconds_until_refresh() <= 76  # refresh with a quarter of the TTL left
    assert not tokens.update(token)
    assert tokens.update(mint("alice", ttl=200))
    assert tokens.version == 1
    with pytest.raises(InvalidArgumentError, match="this peer is g1/alice"):
        tokens.update(mint("mallory"))
    with pytest.raises(MalformedTokenError):
        Tokens("not-a-token")


async def test_token_provider_is_asked() -> None:
    fresh = mint("alice", ttl=300)

    async def provider() -> str:
        return fresh

    tokens = Tokens(mint("alice", ttl=2), provider)
    assert tokens.seconds_until_refresh() <= 1.0
    assert await tokens.refresh()
    assert tokens.current == fresh
    assert not await Tokens(mint("alice")).refresh()


def test_local_candidates_from_sdp_are_distinct_and_tagged() -> None:
    batch = local_candidates(SDP)
    assert [c.candidate for c in batch] == [
        "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host",
        "candidate:2 1 udp 16777215 127.0.0.1 6000 typ relay raddr 127.0.0.1 rport 5001",
    ]
    assert all(c.sdp_mid == "0" and c.sdp_m_line_index == 0 for c in batch)
    assert all(c.username == "abcd" for c in batch)


def test_end_of_candidates_marks_every_m_line() -> None:
    three_lines = SDP + "m=audio 9 UDP/TLS/RTP/SAVPF 111\na=mid:2\na=ice-ufrag:efgh\n"
    marks = end_of_candidates(three_lines)
    assert [(m.candidate, m.sdp_m_line_index, m.sdp_mid, m.username) for m in marks] == [
        ("", 0, "0", "abcd"),
        ("", 1, "1", "abcd"),
        ("", 2, "2", "efgh"),
    ]
    assert all(parse_remote(m) is None for m in marks)  # never taken for a candidate


def test_parse_remote_candidate_of_a_browser() -> None:
    line = (
        "candidate:842163049 1 udp 1677729535 127.0.0.1 40000 typ srflx raddr 127.0.0.1"
        " rport 40001 generation 0 ufrag Xy12 network-cost 999"
    )
    remote = parse_remote(ICECandidate(candidate=line, sdp_mid="0", username="Xy12"))
    assert remote is not None
    assert remote.candidate.type == "srflx"
    assert remote.candidate.port == 40000
    assert remote.candidate.sdpMid == "0"
    assert remote.ufrag == "Xy12"
    assert remote.key == candidate_key("a=" + line)
    assert parse_remote(ICECandidate(candidate="")) is None  # end of candidates
    assert parse_remote(ICECandidate(candidate="candidate:1 1 udp x")) is None
    assert parse_remote(ICECandidate(candidate="candidate:1 1 udp p 1.2.3.4 1 typ host")) is None


def test_status_errors_are_typed() -> None:
    assert isinstance(status_error(7, "Send: denied"), PermissionDeniedError)
    assert isinstance(status_error(16, "x"), TokenError)
    assert isinstance(status_error(5, "x"), NotFoundError)
    assert isinstance(status_error(14, "x"), UnavailableError)
    aborted = status_error(10, "Send: aborted")
    assert isinstance(aborted, SignalingError)
    assert aborted.grpc_status is GrpcStatus.ABORTED
    assert str(aborted) == "Send: aborted"
    assert status_error(99, "x").grpc_status is GrpcStatus.UNKNOWN
    assert is_fatal(aborted)
    assert is_fatal(status_error(16, "x"))
    assert not is_fatal(status_error(14, "x"))
    assert not is_fatal(status_error(8, "x"))


async def test_event_stream_ends_with_its_error() -> None:
    stream: EventStream[int] = EventStream()
    stream.put(1)
    stream.close(PermissionDeniedError("no"))
    stream.put(2)  # ignored once closed
    assert await stream.get() == 1
    with pytest.raises(PermissionDeniedError):
        await stream.get()
    done: EventStream[int] = EventStream()
    asyncio.get_running_loop().call_later(0.01, done.close)
    assert [x async for x in done] == []


def test_public_names_are_pinned() -> None:
    import pulsebeam.peer

    assert sorted(pulsebeam.peer.__all__) == [
        "DataChannel",
        "EventStream",
        "Peer",
        "PeerClosedError",
        "PeerInfo",
        "PeerState",
        "Session",
        "SignalingError",
        "TokenProvider",
        "create_peer",
        "restrict_host_addresses",
    ]
    for name in pulsebeam.peer.__all__:
        assert getattr(pulsebeam.peer, name) is not None


def test_restart_policy_paces_and_gives_up() -> None:
    now = [100.0]
    impolite, polite = RestartPolicy(True, lambda: now[0]), RestartPolicy(False, lambda: now[0])
    assert impolite.delay(first_of_failure=True) == FIRST_RESTART_DELAY
    assert polite.delay(first_of_failure=True) == POLITE_RESTART_DELAY > FIRST_RESTART_DELAY
    assert impolite.delay(first_of_failure=False) == 0.0
    impolite.started()
    now[0] += 1.0
    assert impolite.delay(first_of_failure=False) == ICE_RESTART_DEBOUNCE - 1.0
    for _ in range(MAX_ICE_RESTARTS - 1):
        now[0] += ICE_RESTART_DEBOUNCE
        assert impolite.delay(first_of_failure=False) == 0.0
        impolite.started()
    assert impolite.delay(first_of_failure=False) is None  # attempts ran out
    impolite.succeeded()  # a restart that connects gives the session its attempts back
    now[0] += ICE_RESTART_DEBOUNCE
    assert impolite.delay(first_of_failure=False) == 0.0
    assert impolite.total == MAX_ICE_RESTARTS


def _offer(*sections: tuple[str, str], bundle: str | None) -> str:
    lines = ["v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0"]
    if bundle is not None:
        lines.append(f"a=group:BUNDLE {bundle}")
    for kind, mid in sections:
        lines += [f"m={kind} 9 UDP/DTLS/SCTP webrtc-datachannel", f"a=mid:{mid}"]
    return "\r\n".join(lines) + "\r\n"


@pytest.mark.parametrize(
    ("sections", "bundle", "keeps"),
    [
        ((("application", "0"),), "0", True),  # the data channel alone (the SDK's first offer)
        ((("application", "0"), ("audio", "1")), "0 1", True),  # media added later
        ((("audio", "0"), ("application", "1")), "0 1", False),  # media first: it leads
        ((("audio", "0"), ("application", "1")), None, True),  # no BUNDLE: its own transport
        ((("audio", "0"),), "0", False),  # no data channel at all
    ],
)
def test_an_offer_keeps_the_gathering_transport_unless_another_m_line_leads_its_bundle(
    sections: tuple[tuple[str, str], ...], bundle: str | None, keeps: bool
) -> None:
    assert PreparedConnection.keeps_transport(_offer(*sections, bundle=bundle)) is keeps
