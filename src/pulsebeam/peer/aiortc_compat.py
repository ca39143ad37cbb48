"""Workarounds for what aiortc (1.x) lacks, kept in one place so they are easy to drop later.

- No ``rollback``: :func:`rollback_local_offer` undoes ``setLocalDescription(offer)`` the way a
  browser's rollback does, by restoring the private state aiortc changed (signaling state,
  pending description, mids it assigned to new transceivers). Used only by the polite side,
  and only after a first offer/answer exchange (see :mod:`pulsebeam.peer.session`).
- No choice of host addresses: aioice drops 127.0.0.1 from host candidates and offers every
  other interface. :func:`restrict_host_addresses` replaces its address lookup process-wide,
  which tests and benchmarks on one machine use to keep all traffic on loopback.
- No API for the selected candidate pair: :func:`selected_path` reads it from aioice.
- Answering an offer that leaves out a transceiver added locally (a polite peer's track added
  before the first exchange) fails in ``setLocalDescription`` (the transceiver has no offered
  direction); :func:`mark_unoffered_inactive` gives it "inactive" for that answer, and the
  session's next offer carries it.
- Transports that a renegotiation adds while the first DTLS handshake is still running are
  never started (two overlapping internal ``__connect`` runs, the second skips a transport
  that is still "connecting"); :func:`resume_transports` runs that step again once connected.
- aioice answers a check on a pair whose own check is still in progress without sending that
  check again at once, as RFC 8445 (section 7.3.1.4) asks, so a first check that was lost goes
  again only at the 500 ms retransmission. Over TURN that is the usual case: the side that
  starts first sends its check before the other has made its permission, which drops it.
  Importing this module installs :func:`_retrigger_in_progress_checks` process-wide (once); the
  other side's check then sends ours again at once (a relay-only connection here: ~515 → ~33
  ms).
- aioice checks a remote candidate that arrives while its checks run only at its next 20 ms
  tick, even when no check is under way (the other side's candidates trickled after this
  side's ICE started): :func:`_check_trickled_pairs_at_once`, installed the same way, starts
  the best pair's check once a batch is in, when no check is under way (the tick would have
  had none to pace).
- aioice's ``connect()`` paces the checks by sleeping 20 ms between ticks, and sees the check
  list complete only when it next wakes: ICE reads "completed", and DTLS starts, up to 20 ms
  after the nominated pair succeeded (on loopback, most of a connection's setup time).
  :func:`_return_from_connect_once_completed`, installed the same way, makes ``connect()``
  return as soon as ICE completes (two aiortc peers on loopback: ~28 → ~8 ms).
- A closing connection stops the tracks it sends, so the application's track could not go on
  over the new connection of an ICE restart: each connection sends a :class:`TrackFeed` of it.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Sequence
from typing import Any, Literal

import aioice.ice
import aioice.stun
from aioice.ice import CandidatePair
from aiortc import MediaStreamTrack, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError
from av.frame import Frame
from av.packet import Packet

__all__ = [
    "TrackFeed",
    "mark_unoffered_inactive",
    "restrict_host_addresses",
    "resume_transports",
    "rollback_local_offer",
    "selected_path",
]

# aiortc's name-mangled private attributes (stable across aiortc 1.x).
_PC = "_RTCPeerConnection__"
_TRANSCEIVER_MID = "_RTCRtpTransceiver__mid"
_TRANSACTION = "_Transaction__"  # aioice.stun.Transaction's name-mangled attributes


def rollback_local_offer(pc: RTCPeerConnection) -> None:
    """Return ``pc`` from have-local-offer to stable, as ``setLocalDescription(rollback)``."""
    if pc.signalingState != "have-local-offer":
        raise ValueError(f"cannot roll back in signaling state {pc.signalingState!r}")
    negotiated = _negotiated_mids(pc)
    for transceiver in pc.getTransceivers():
        # A transceiver first offered in the rolled-back offer gets its mid back to None, so
        # the remote offer can take it or a later offer of ours can carry it again.
        if transceiver.mid is not None and transceiver.mid not in negotiated:
            setattr(transceiver, _TRANSCEIVER_MID, None)
    setattr(pc, _PC + "pendingLocalDescription", None)
    getattr(pc, _PC + "setSignalingState")("stable")


def mark_unoffered_inactive(pc: RTCPeerConnection) -> None:
    """Before answering: local transceivers the remote offer did not include count as inactive."""
    for transceiver in pc.getTransceivers():
        if transceiver.mid is None and transceiver._offerDirection is None:
            transceiver._offerDirection = "inactive"


async def resume_transports(pc: RTCPeerConnection) -> None:
    """Start every negotiated sender, receiver and SCTP association not started yet."""
    await getattr(pc, _PC + "connect")()


def _negotiated_mids(pc: RTCPeerConnection) -> set[str]:
    mids: set[str] = set()
    for name in ("currentLocalDescription", "currentRemoteDescription"):
        description = getattr(pc, _PC + name)
        if description is not None:
            mids.update(media.rtp.muxId for media in description.media)
    return mids


def restrict_host_addresses(addresses: Sequence[str]) -> None:
    """Make every later ICE gathering in this process offer exactly ``addresses`` as host."""
    chosen = list(addresses)

    def host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in chosen if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = host_addresses


def selected_path(pc: RTCPeerConnection) -> Literal["relay", "direct"] | None:
    """``relay`` if the nominated pair uses a TURN relay, ``direct`` if not, None if none yet."""
    sctp = pc.sctp
    if sctp is None:
        return None
    connection = sctp.transport.transport._connection
    pair = connection._nominated.get(1)
    if pair is None:
        return None
    relayed = "relay" in (pair.local_candidate.type, pair.remote_candidate.type)
    return "relay" if relayed else "direct"


class TrackFeed(MediaStreamTrack):
    """One connection's view of an application track: stopping it leaves the source alone.

    aiortc's sender stops its track when its connection closes. aiortc's ``MediaRelay`` would
    also shield the source, but keeps a task reading it for as long as the source lives, with
    or without consumers; a feed reads only while its sender asks for frames.
    """

    def __init__(self, source: MediaStreamTrack) -> None:
        super().__init__()
        self.kind = source.kind
        self.source = source

    async def recv(self) -> Frame | Packet[Any]:
        if self.readyState != "live":
            raise MediaStreamError
        return await self.source.recv()


def _retrigger_in_progress_checks() -> None:
    """Make an incoming check send this side's in-progress check of the same pair again at
    once, in the same transaction (so that a response already on its way still counts), while
    the checks run (after they end, the pairs cancelled then still read "in progress")."""
    original = aioice.ice.Connection.check_incoming
    if getattr(original, "_pulsebeam", False):
        return

    def check_incoming(
        self: aioice.ice.Connection,
        message: aioice.stun.Message,
        addr: tuple[str, int],
        protocol: aioice.ice.StunProtocol,
    ) -> None:
        original(self, message, addr, protocol)
        if not self._early_checks_done or self._check_list_done:
            return
        pair = next(
            (p for p in self._check_list if p.protocol is protocol and p.remote_addr == addr), None
        )
        if pair is None or pair.state is not CandidatePair.State.IN_PROGRESS:
            return
        for transaction in list(protocol.transactions.values()):
            request = getattr(transaction, _TRANSACTION + "request", None)
            if request is not None and getattr(transaction, _TRANSACTION + "addr", None) == addr:
                protocol.send_stun(request, addr)

    check_incoming._pulsebeam = True  # type: ignore[attr-defined]
    aioice.ice.Connection.check_incoming = check_incoming  # type: ignore[method-assign]


def _check_trickled_pairs_at_once() -> None:
    """After remote candidates are added while the checks run (a batch is added in one go):
    if no check is under way or about to start, start the best waiting or frozen pair now
    instead of at the next tick."""
    original = aioice.ice.Connection._add_remote_candidate
    if getattr(original, "_pulsebeam", False):
        return
    pending: weakref.WeakSet[aioice.ice.Connection] = weakref.WeakSet()

    def check_now(connection: aioice.ice.Connection) -> None:
        pending.discard(connection)
        if not connection._early_checks_done or connection._check_list_done:
            return
        if connection._closing or any(_under_way(pair) for pair in connection._check_list):
            return
        connection._check_periodic()

    def add_remote_candidate(
        self: aioice.ice.Connection, remote_candidate: aioice.Candidate, network_host: str
    ) -> None:
        original(self, remote_candidate, network_host)
        if self._early_checks_done and self not in pending:
            pending.add(self)
            asyncio.get_running_loop().call_soon(check_now, self)

    add_remote_candidate._pulsebeam = True  # type: ignore[attr-defined]
    aioice.ice.Connection._add_remote_candidate = add_remote_candidate  # type: ignore[method-assign]


def _return_from_connect_once_completed() -> None:
    """Run aioice's ``connect()`` and return as soon as it queues "completed" for itself (every
    component has a nominated pair, the check list not already failed or closed), doing then
    what it would do after its next tick: cancel the checks still under way and start the
    consent checks (RFC 7675). A failure still ends through aioice's own ``connect()``, which
    raises once it wakes; so does a close before completion, and a close begun after it but
    before this wakes fails it too (rather than start consent checks on a closed connection)."""
    original_connect = aioice.ice.Connection.connect
    if getattr(original_connect, "_pulsebeam", False):
        return
    original_maybe_complete = aioice.ice.Connection._check_list_maybe_complete
    completions: weakref.WeakKeyDictionary[aioice.ice.Connection, asyncio.Future[None]] = (
        weakref.WeakKeyDictionary()
    )

    def check_list_maybe_complete(self: aioice.ice.Connection) -> bool:
        done_before = self._check_list_done  # a failure or a close queued before stands
        complete: bool = original_maybe_complete(self)
        completion = completions.get(self)
        if complete and not done_before and completion is not None and not completion.done():
            completion.set_result(None)
        return complete

    async def connect(self: aioice.ice.Connection) -> None:
        completion = asyncio.get_running_loop().create_future()
        completions[self] = completion
        checks = asyncio.ensure_future(original_connect(self))
        try:
            await asyncio.wait((checks, completion), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            checks.cancel()
            raise
        finally:
            completions.pop(self, None)
        if checks.done():
            checks.result()  # its outcome, a ConnectionError included
            return
        # Completed while aioice's connect() sleeps until its next tick (it has not reached
        # the steps below: they follow its wait for the outcome with no await in between).
        checks.cancel()
        for pair in self._check_list:
            if pair.task is not None:
                pair.task.cancel()
        if self._closing:
            raise ConnectionError("ICE closed while connecting")
        self._query_consent_task = asyncio.create_task(self.query_consent())

    connect._pulsebeam = True  # type: ignore[attr-defined]
    aioice.ice.Connection.connect = connect  # type: ignore[method-assign]
    aioice.ice.Connection._check_list_maybe_complete = check_list_maybe_complete  # type: ignore[method-assign]


def _under_way(pair: CandidatePair) -> bool:
    state = pair.state
    waiting_to_run = state is CandidatePair.State.WAITING and pair.task is not None
    return state is CandidatePair.State.IN_PROGRESS or waiting_to_run


_retrigger_in_progress_checks()
_check_trickled_pairs_at_once()
_return_from_connect_once_completed()
