"""The SDK's aioice fixes on real aiortc connections over loopback (the TURN one, a check lost
for want of a permission, is in tests/turn/test_aiortc_relay.py)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aioice.stun
import pytest
from aioice import Candidate
from aioice.candidate import candidate_priority
from aioice.ice import CandidatePair, Connection
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import candidate_from_sdp

import pulsebeam.peer.aiortc_compat  # noqa: F401 - installs the fixes, as importing the SDK does

TIMEOUT = 10.0


def _without_candidates(sdp: str) -> tuple[str, list[str]]:
    lines = sdp.splitlines()
    candidates = [line[len("a=") :] for line in lines if line.startswith("a=candidate:")]
    kept = [line for line in lines if not line.startswith(("a=candidate:", "a=end-of-candidates"))]
    return "\r\n".join(kept) + "\r\n", candidates


async def test_a_candidate_trickled_once_checks_run_is_checked_at_once(
    loopback_ice: RTCConfiguration,
) -> None:
    """The callee's ICE starts with no remote candidate (the offer had none); the caller's
    candidate then arrives. aioice alone would check it at its next 20 ms tick."""
    caller, callee = RTCPeerConnection(loopback_ice), RTCPeerConnection(loopback_ice)
    try:
        opened = asyncio.Event()
        caller.createDataChannel("chat").on("open", opened.set)
        await caller.setLocalDescription(await caller.createOffer())
        offer, candidates = _without_candidates(caller.localDescription.sdp)
        assert candidates
        await callee.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        await callee.setLocalDescription(await callee.createAnswer())
        await caller.setRemoteDescription(callee.localDescription)
        sctp = callee.sctp
        assert sctp is not None
        ice = sctp.transport.transport
        async with asyncio.timeout(TIMEOUT):
            while ice.state != "checking":  # noqa: ASYNC110 - aiortc has no event for it
                await asyncio.sleep(0.001)
        checks = ice._connection._check_list
        assert not checks
        candidate = candidate_from_sdp(candidates[0].removeprefix("candidate:"))
        candidate.sdpMid, candidate.sdpMLineIndex = sctp.mid, 0
        await callee.addIceCandidate(candidate)
        await asyncio.sleep(0)  # the check task's first step
        (pair,) = checks
        assert pair.task is not None  # started now, not at the next tick
        async with asyncio.timeout(TIMEOUT):
            await opened.wait()
    finally:
        await caller.close()
        await callee.close()


class _Gate(asyncio.DatagramProtocol):
    """A UDP hop between two agents, standing for a slow path (a relay): closed, then open."""

    def __init__(self) -> None:
        self.open = False
        self.ends: tuple[tuple[str, int], tuple[str, int]] | None = None
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.open and self.ends is not None and self.transport is not None:
            first, second = self.ends
            self.transport.sendto(data, second if addr == first else first)


def _candidate(addr: tuple[str, int], priority: int, foundation: str) -> Candidate:
    host, port = addr
    return Candidate(foundation, 1, "udp", priority, host, port, "host")


async def test_a_late_check_after_ice_completed_moves_nothing(
    loopback_ice: RTCConfiguration,
) -> None:
    """The controlling agent's check over the preferred (gated) path is still "in progress"
    when ICE completes on the direct one; a late check from the other side over that path
    must not send it again (it carries USE-CANDIDATE and would move both sides there)."""
    loop = asyncio.get_running_loop()
    gate_transport, gate = await loop.create_datagram_endpoint(_Gate, local_addr=("127.0.0.1", 0))
    via_gate = gate_transport.get_extra_info("sockname")[:2]
    a, b = Connection(ice_controlling=True), Connection(ice_controlling=False)
    try:
        await a.gather_candidates()
        await b.gather_candidates()
        a_addr, b_addr = ((c.local_candidates[0].host, c.local_candidates[0].port) for c in (a, b))
        gate.ends = (a_addr, b_addr)
        a.remote_username, a.remote_password = b.local_username, b.local_password
        b.remote_username, b.remote_password = a.local_username, a.local_password
        high = candidate_priority(1, "host")
        for agent, direct in ((a, b_addr), (b, a_addr)):
            await agent.add_remote_candidate(_candidate(via_gate, high, "gate"))
            await agent.add_remote_candidate(_candidate(direct, high - 1000, "direct"))
            await agent.add_remote_candidate(None)
        async with asyncio.timeout(TIMEOUT):
            await asyncio.gather(a.connect(), b.connect())
        assert a._nominated[1].remote_addr == b_addr
        gate.open = True
        late = CandidatePair(b._protocols[0], _candidate(via_gate, high, "gate"))
        request = b.build_request(late, nominate=False)
        async with asyncio.timeout(TIMEOUT):
            await late.protocol.request(request, via_gate, integrity_key=a.local_password.encode())
        await asyncio.sleep(0.2)  # time for a check that should not be sent, and its answer
        assert a._nominated[1].remote_addr == b_addr
        assert b._nominated[1].remote_addr == a_addr
    finally:
        await a.close()
        await b.close()
        gate_transport.close()


async def _paired_agents() -> tuple[Connection, Connection]:
    """Two gathered aioice agents on loopback that know each other's candidates."""
    a, b = Connection(ice_controlling=True), Connection(ice_controlling=False)
    await a.gather_candidates()
    await b.gather_candidates()
    for agent, other in ((a, b), (b, a)):
        agent.remote_username, agent.remote_password = other.local_username, other.local_password
        for candidate in other.local_candidates:
            await agent.add_remote_candidate(candidate)
        await agent.add_remote_candidate(None)
    return a, b


async def test_connect_returns_once_ice_completes_not_at_the_next_tick(
    loopback_ice: RTCConfiguration, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aioice alone returns from connect() only at the pacing tick after completion (up to
    20 ms later, and DTLS waits for it): no tick may fall between completion and return."""
    events: list[tuple[str, Connection]] = []
    tick = Connection._check_periodic
    complete = Connection._check_list_maybe_complete

    def recorded_tick(self: Connection) -> bool:
        events.append(("tick", self))
        return tick(self)

    def recorded_complete(self: Connection) -> bool:
        done = complete(self)
        if done and ("completed", self) not in events:
            events.append(("completed", self))
        return done

    monkeypatch.setattr(Connection, "_check_periodic", recorded_tick)
    monkeypatch.setattr(Connection, "_check_list_maybe_complete", recorded_complete)
    a, b = await _paired_agents()
    try:

        async def connect(agent: Connection) -> None:
            await agent.connect()
            events.append(("returned", agent))

        async with asyncio.timeout(TIMEOUT):
            await asyncio.gather(connect(a), connect(b))
        for agent in (a, b):
            mine = [kind for kind, who in events if who is agent]
            completed = mine.index("completed")
            assert mine[completed:] == ["completed", "returned"], mine
            # Then what aioice's connect() does after its wait: checks stopped, consent begun.
            assert agent._query_consent_task is not None
            assert not agent._query_consent_task.done()
            assert all(p.task is None or p.task.done() for p in agent._check_list)
            assert agent._nominated
        await a.send(b"over the nominated pair")
        async with asyncio.timeout(TIMEOUT):
            assert await b.recv() == b"over the nominated pair"
    finally:
        await a.close()
        await b.close()


async def test_a_close_while_connecting_still_fails_connect(
    loopback_ice: RTCConfiguration,
) -> None:
    """A peer that never answers: the checks run until close(), which fails connect() (through
    aioice's own connect(), as before) and leaves no consent checks behind."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    agent = Connection(ice_controlling=True)
    try:
        await agent.gather_candidates()
        agent.remote_username, agent.remote_password = "silent", "s" * 22
        await agent.add_remote_candidate(
            _candidate(silent.getsockname(), candidate_priority(1, "host"), "silent")
        )
        await agent.add_remote_candidate(None)
        connecting = asyncio.create_task(agent.connect())
        await asyncio.sleep(0.05)  # a few checks sent, none answered
        assert not connecting.done()
        await agent.close()
        async with asyncio.timeout(TIMEOUT):
            with pytest.raises(ConnectionError):
                await connecting
        assert agent._query_consent_task is None
    finally:
        await agent.close()
        silent.close()


async def test_a_close_as_ice_completes_fails_connect(
    loopback_ice: RTCConfiguration, monkeypatch: pytest.MonkeyPatch
) -> None:
    """close() begun in the very callback that completes ICE, before connect() has returned:
    connect() fails, as it does for any close while connecting, and starts no consent checks
    on the closed connection (they would run for as long as the process)."""
    a, b = await _paired_agents()
    closing: list[asyncio.Future[None]] = []
    complete = Connection._check_list_maybe_complete

    def close_on_completion(self: Connection) -> bool:
        done = complete(self)
        if done and self is a and not closing:
            closing.append(asyncio.ensure_future(a.close()))
        return done

    monkeypatch.setattr(Connection, "_check_list_maybe_complete", close_on_completion)
    try:
        async with asyncio.timeout(TIMEOUT):
            outcome, _ = await asyncio.gather(a.connect(), b.connect(), return_exceptions=True)
            await closing[0]
        assert isinstance(outcome, ConnectionError)
        assert a._query_consent_task is None
    finally:
        await a.close()
        await b.close()


async def test_a_check_list_that_failed_stays_failed(
    loopback_ice: RTCConfiguration, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The only check fails while remote candidates may still come; end-of-candidates then
    fails the check list. A late check from the other side nominates the pair before
    connect() wakes: connect() still fails, as aioice's does (the session's ICE restart takes
    over), and does not report a connection whose check list has failed."""
    monkeypatch.setattr(aioice.stun, "RETRY_MAX", 1)
    monkeypatch.setattr(aioice.stun, "RETRY_RTO", 0.05)
    a, b = Connection(ice_controlling=True), Connection(ice_controlling=False)
    answering = False
    answer = b.request_received

    def answer_once_open(*args: Any) -> None:
        if answering:
            answer(*args)

    monkeypatch.setattr(b, "request_received", answer_once_open)
    b_connecting: list[asyncio.Task[None]] = []
    a_checks_failed = asyncio.Event()
    fail = Connection._check_list_maybe_fail

    def b_checks_once_a_failed(self: Connection) -> None:
        nonlocal answering
        if self is a and all(p.state is CandidatePair.State.FAILED for p in a._check_list):
            a_checks_failed.set()  # still running: more remote candidates may come
        done_before = self._check_list_done
        fail(self)
        if self is a and not done_before and self._check_list_done:
            answering = True
            b_connecting.append(asyncio.create_task(b.connect()))

    monkeypatch.setattr(Connection, "_check_list_maybe_fail", b_checks_once_a_failed)
    try:
        await a.gather_candidates()
        await b.gather_candidates()
        for agent, other in ((a, b), (b, a)):
            agent.remote_username = other.local_username
            agent.remote_password = other.local_password
            for candidate in other.local_candidates:
                await agent.add_remote_candidate(candidate)
        await b.add_remote_candidate(None)  # a's end-of-candidates comes later
        a_connecting = asyncio.create_task(a.connect())
        async with asyncio.timeout(TIMEOUT):
            await a_checks_failed.wait()
            await a.add_remote_candidate(None)
            with pytest.raises(ConnectionError):
                await a_connecting
            await asyncio.wait(b_connecting)
        assert a._nominated  # the late check did nominate the pair
        assert a._query_consent_task is None
    finally:
        await a.close()
        await b.close()
        for task in b_connecting:
            task.cancel()
        await asyncio.gather(*b_connecting, return_exceptions=True)
