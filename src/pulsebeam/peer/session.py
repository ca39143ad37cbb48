"""One session with one remote connection: the official SDK's client-to-client protocol on aiortc.

What goes over signaling (shared/PROTOCOL.md §4):

- every message carries a per-session ``seqnum`` counting from 0; signals (SDP, candidates) are
  ``reliable`` and de-duplicated by ``seqnum`` here, ``Join`` and ``Bye`` are not;
- both sides create an ``__internal`` data channel at start; the impolite side (higher
  ``conn_id``) makes the first offer, the polite side sends a ``Join`` instead, which gives the
  other end a session with us if it has none yet (the official SDK does the same);
- perfect negotiation for later offers: the impolite side ignores a colliding offer, the polite
  side rolls back (emulated, aiortc has no rollback) and answers;
- a signal with a lower ``generation_counter`` than ours is stale, a higher one is adopted;
- ``Bye`` closes the session without an answer;
- ICE restart on failure (aiortc has none): see :mod:`pulsebeam.peer.restart`.

Every signaling message and every local action that touches the RTCPeerConnection runs on one
worker task, in order, so aiortc never sees two negotiation steps at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from enum import Enum
from typing import Any, Literal, Protocol

from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)

from pulsebeam.errors import PulseBeamError
from pulsebeam.peer.aiortc_compat import (
    TrackFeed,
    mark_unoffered_inactive,
    resume_transports,
    rollback_local_offer,
    selected_path,
)
from pulsebeam.peer.candidates import (
    RemoteCandidates,
    all_candidates_in,
    end_of_candidates,
    local_candidates,
)
from pulsebeam.peer.channel import DataChannel
from pulsebeam.peer.errors import PeerClosedError
from pulsebeam.peer.events import EventStream, first_of
from pulsebeam.peer.identity import PeerInfo, is_impolite
from pulsebeam.peer.prepared import INTERNAL_LABEL, PreparedConnection
from pulsebeam.peer.reliable import Outbox, Sender, SeqnumWindow
from pulsebeam.peer.restart import CarryOver, RestartPolicy, recover
from pulsebeam.proto import (
    SDP_KIND_ANSWER,
    SDP_KIND_OFFER,
    Bye,
    ICECandidateBatch,
    Join,
    Message,
    MessagePayload,
    Sdp,
    Signal,
)

__all__ = ["BYE_TIMEOUT", "INTERNAL_LABEL", "SETUP_TIMEOUT", "Session", "SessionLink"]

logger = logging.getLogger(__name__)

BYE_TIMEOUT = 2.0
# A session whose other side has sent no description this long after it began is closed (with
# a Bye): that peer left before answering (a Join, then nothing), or its policy hides this one.
SETUP_TIMEOUT = 30.0
# The official SDK flushes its candidate batch 100 ms after the first candidate; ours repeats
# the description's candidates then, off the critical path of the first exchange.
CANDIDATE_FLUSH_DELAY = 0.1


class _Step(Enum):
    """Local work queued on the worker between messages."""

    NEGOTIATE = "check whether we must offer"
    RESUME = "start transports a racing handshake skipped"
    RESTART = "replace the failed connection and offer"


class SessionLink(Sender, Protocol):
    """What a session needs from its peer: its identity, sending, and the close notice."""

    @property
    def configuration(self) -> RTCConfiguration:
        """The current one, with fresh TURN credentials, for a connection made by a restart."""
        ...

    def session_closed(self, session: Session) -> None: ...


class Session:
    """A WebRTC session with ``other``; created by :class:`pulsebeam.peer.Peer`, not directly."""

    def __init__(
        self,
        link: SessionLink,
        other: PeerInfo,
        configuration: RTCConfiguration,
        prepared: PreparedConnection | None = None,
    ) -> None:
        self.local = link.info
        self.other = other
        self.impolite = is_impolite(self.local, other)
        self.close_reason: str | None = None
        self._link = link
        self._generation = 0
        self._received = SeqnumWindow()
        self._negotiated = False
        self._remote_offer_seen = False
        self._described_by_other = False  # a remote description was ever applied
        self._renegotiate = False
        self._remote = RemoteCandidates()
        self._inbox: asyncio.Queue[Message | _Step] = asyncio.Queue()
        self._outbox = Outbox(link, other)
        self._channels: EventStream[DataChannel] = EventStream()
        self._tracks: EventStream[MediaStreamTrack] = EventStream()
        self._states: EventStream[str] = EventStream()
        self._connected = asyncio.Event()
        self._settled = asyncio.Event()  # the current connection got connected or failed
        self._closed = asyncio.Event()
        self._finished = asyncio.Event()
        self._carry = CarryOver()  # what a restart sets up again on a new connection
        self._restarts = RestartPolicy(self.impolite)
        self._recovery: asyncio.Task[None] | None = None
        self._restart_target: PreparedConnection | None = None
        self._background: set[asyncio.Task[None]] = set()  # closing replaced connections
        self._flushes: set[asyncio.Task[None]] = set()
        self._conn = prepared or PreparedConnection(configuration)
        self._adopt(self._conn)
        self._tasks = [
            asyncio.create_task(self._process(), name=f"session {other} worker"),
            asyncio.create_task(self._send_loop(), name=f"session {other} sender"),
            asyncio.create_task(self._expect_other_side(), name=f"session {other} setup"),
        ]
        self._inbox.put_nowait(_Step.NEGOTIATE)

    # ----------------------------------------------------------------- public API

    @property
    def pc(self) -> RTCPeerConnection:
        """The aiortc connection itself, for what this class does not wrap (stats, codecs…).

        An ICE restart replaces it: read it again rather than keeping it.
        """
        return self._conn.pc

    @property
    def _pc(self) -> RTCPeerConnection:
        return self._conn.pc

    @property
    def connection_state(self) -> str:
        return "closed" if self._closed.is_set() else self._pc.connectionState

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def ice_restarts(self) -> int:
        """How many times this side restarted ICE (replaced a failed connection) so far."""
        return self._restarts.total

    @property
    def path(self) -> Literal["relay", "direct"] | None:
        """How the connection runs once connected: through a TURN relay or directly."""
        return selected_path(self._pc)

    def create_data_channel(
        self,
        label: str,
        *,
        ordered: bool = True,
        max_retransmits: int | None = None,
        max_packet_life_time: int | None = None,
        protocol: str = "",
    ) -> DataChannel:
        """A new channel to the other side (no renegotiation: ``__internal`` set up SCTP)."""
        if label == INTERNAL_LABEL:
            raise ValueError(f"the data channel label {INTERNAL_LABEL!r} is reserved")
        self._check_open()
        channel = self._pc.createDataChannel(
            label,
            ordered=ordered,
            maxRetransmits=max_retransmits,
            maxPacketLifeTime=max_packet_life_time,
            protocol=protocol,
        )
        wrapper = DataChannel(channel)
        self._carry.channels.append(wrapper)
        return wrapper

    def add_track(self, track: MediaStreamTrack) -> RTCRtpSender:
        """Send ``track`` (e.g. an aiortc ``VideoStreamTrack``); renegotiates the session.

        The sender sends a feed of ``track`` (``sender.track`` is that feed), so that closing
        or replacing the connection never stops ``track`` itself: stop it when you are done.
        """
        self._check_open()
        sender = self._pc.addTrack(TrackFeed(track))
        self._carry.tracks.append(track)
        self._renegotiate = True
        self._inbox.put_nowait(_Step.NEGOTIATE)
        return sender

    def data_channels(self) -> EventStream[DataChannel]:
        """The channels the other side opens, as they open (single consumer)."""
        return self._channels

    def tracks(self) -> EventStream[MediaStreamTrack]:
        """The remote media tracks, as they arrive (again after an ICE restart; single consumer)."""
        return self._tracks

    def connection_states(self) -> EventStream[str]:
        """Each new ``connectionState``, across ICE restarts, ending with ``closed``."""
        return self._states

    async def wait_connected(self) -> None:
        """Return once connected; raises :class:`PeerClosedError` if the session ends first."""
        await first_of(self._connected, self._closed)
        if self._closed.is_set():
            raise PeerClosedError(f"session with {self.other} closed: {self.close_reason}")

    async def wait_closed(self) -> str:
        """Wait until the session has ended and released everything; returns the reason."""
        await self._finished.wait()
        return self.close_reason or ""

    async def close(self, reason: str = "session closed", *, say_bye: bool = True) -> None:
        """Say ``Bye`` to the other side (unless ``say_bye`` is False) and release it all."""
        await self._shutdown(reason, send_bye=say_bye)

    def __repr__(self) -> str:
        role = "impolite" if self.impolite else "polite"
        return f"Session({self.other}, {role}, {self.connection_state})"

    # ----------------------------------------------------------------- from the peer

    def deliver(self, message: Message) -> None:
        """A message from ``other``, in arrival order; duplicates of reliable ones are dropped."""
        if self._closed.is_set():
            return
        header = message.header
        if header.reliable and not self._received.add(header.seqnum):
            logger.debug("session %s: duplicate seqnum %s dropped", self.other, header.seqnum)
            return
        payload = message.payload
        if payload.WhichOneof("payload_type") == "signal" and payload.signal.sdp.kind == (
            SDP_KIND_OFFER
        ):
            self._remote_offer_seen = True
        self._inbox.put_nowait(message)

    async def _shutdown(self, reason: str, *, send_bye: bool) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self.close_reason = reason
        logger.info("session %s closed: %s", self.other, reason)
        current = asyncio.current_task()
        for task in [*self._tasks, *self._flushes, self._recovery]:
            if task is not None and task is not current:
                task.cancel()
        if send_bye:
            bye = self._outbox.message(MessagePayload(bye=Bye()), reliable=False)
            try:
                async with asyncio.timeout(BYE_TIMEOUT):
                    await self._link.send_message(bye, bye=True)
            except (PulseBeamError, TimeoutError) as exc:
                logger.debug("session %s: Bye not delivered: %s", self.other, exc)
        await self._conn.close()
        await asyncio.gather(*self._background, return_exceptions=True)
        self._carry.end()
        self._channels.close()
        self._tracks.close()
        self._states.put("closed")
        self._states.close()
        self._link.session_closed(self)
        self._finished.set()

    def _check_open(self) -> None:
        if self._closed.is_set():
            raise PeerClosedError(f"session with {self.other} is closed: {self.close_reason}")

    @staticmethod
    def _spawn(tasks: set[asyncio.Task[None]], work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    # ----------------------------------------------------------------- aiortc events

    def _adopt(self, conn: PreparedConnection) -> None:
        """Listen to ``conn``'s events; those of a connection replaced since are ignored."""
        pc = conn.pc

        def on_datachannel(channel: RTCDataChannel) -> None:
            if conn is self._conn:
                self._on_datachannel(channel)

        def on_track(track: MediaStreamTrack) -> None:
            if conn is self._conn:
                self._tracks.put(track)

        def on_state() -> None:
            if conn is self._conn:
                self._on_connection_state()

        pc.on("datachannel", on_datachannel)
        pc.on("track", on_track)
        pc.on("connectionstatechange", on_state)

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if channel.label == INTERNAL_LABEL:
            self._conn.internal.append(channel)  # the other side's: its id outlives a restart
            return
        wrapper = DataChannel(channel)
        self._carry.channels.append(wrapper)
        self._channels.put(wrapper)

    def _on_connection_state(self) -> None:
        state = self._pc.connectionState
        logger.debug("session %s: connection %s", self.other, state)
        if self._closed.is_set():
            return  # "closed" is reported by _shutdown, once
        if state == "closed":
            # aiortc closes a connection whose ICE consent expired (its DTLS transport ends
            # first, so it never says "failed"); for the session that is a failure.
            state = "failed"
        self._states.put(state)
        if state == "connected":
            self._connected.set()
            self._settled.set()
            self._restarts.succeeded()
            self._inbox.put_nowait(_Step.RESUME)
        elif state == "failed":
            self._settled.set()
            if self._recovery is None or self._recovery.done():
                self._recovery = asyncio.create_task(
                    recover(
                        self._restarts,
                        lambda: self._pc.connectionState,
                        self._settled,
                        self._request_restart,
                        self._give_up,
                    )
                )

    # ----------------------------------------------------------------- ICE restart

    def _request_restart(self) -> None:
        self._restart_target = self._conn
        self._inbox.put_nowait(_Step.RESTART)

    async def _give_up(self, reason: str) -> None:
        await self._shutdown(reason, send_bye=True)

    async def _expect_other_side(self) -> None:
        await asyncio.sleep(SETUP_TIMEOUT)
        if not self._described_by_other:
            await self._give_up(f"no offer or answer from {self.other} in {SETUP_TIMEOUT:g} s")

    async def _restart(self) -> None:
        if self._closed.is_set() or self._conn is not self._restart_target:
            return  # closed, or the other side's restart replaced the failed connection first
        self._generation += 1
        logger.info("session %s: ICE restart, generation %s", self.other, self._generation)
        await self._replace()
        await self._offer()

    async def _replace(self) -> None:
        """Swap in a new connection with everything the application set up on the old one."""
        old = self._conn
        internal_ids = tuple(c.id for c in old.internal if c.id is not None)
        self._conn = PreparedConnection(self._link.configuration, internal_ids)
        self._adopt(self._conn)
        self._negotiated = False
        self._remote = RemoteCandidates()
        self._settled.clear()
        self._carry.set_up(self._pc)
        self._spawn(self._background, old.close())

    # ----------------------------------------------------------------- sending

    def _send(self, payload: MessagePayload, *, reliable: bool) -> None:
        self._outbox.put(payload, reliable=reliable)

    def _send_signal(self, signal: Signal) -> None:
        signal.generation_counter = self._generation
        self._send(MessagePayload(signal=signal), reliable=True)

    async def _send_loop(self) -> None:
        try:
            await self._outbox.run()
        except PulseBeamError as exc:
            await self._shutdown(f"signaling failed: {exc}", send_bye=False)

    async def _describe(self, description: RTCSessionDescription) -> None:
        """Send ``description``, then make it the local one (aiortc takes ~0.5 ms to apply it,
        which the other side spends working on it instead).

        A description made while its transport is still gathering, or before it has (a BUNDLE
        led by a media m-line has aiortc gather on that m-line's transport inside
        ``setLocalDescription``), has no candidates (aioice reveals them all at the end); they
        follow in one batch, with an end-of-candidates mark, the moment gathering ends, and the
        other side works on the description meanwhile (an offerer given an answer has started
        its ICE by then, and answers this side's first checks at once). aiortc must not apply
        it before then (it skips gathering already under way). A description made after
        gathering carries every candidate and the end mark; the batch then only repeats them
        later for the browser SDK.
        """
        early = not all_candidates_in(description.sdp)
        self._send_sdp(description)
        await self._conn.ready()
        await self._pc.setLocalDescription(description)
        # Let the ICE start that setLocalDescription scheduled run now: run during a
        # setRemoteDescription of an answer already waiting, it would find the remote ICE
        # parameters but not yet the candidates, and aioice pairs those only at its next
        # 20 ms tick.
        await asyncio.sleep(0)
        final = self._pc.localDescription
        candidates = local_candidates(final.sdp)
        if early:
            batch = ICECandidateBatch(candidates=[*candidates, *end_of_candidates(final.sdp)])
            self._send_signal(Signal(ice_candidate_batch=batch))
        elif candidates:
            batch = ICECandidateBatch(candidates=candidates)
            self._spawn(self._flushes, self._flush_candidates(self._conn, self._generation, batch))

    def _send_sdp(self, description: RTCSessionDescription) -> None:
        kind = SDP_KIND_OFFER if description.type == "offer" else SDP_KIND_ANSWER
        self._send_signal(Signal(sdp=Sdp(kind=kind, sdp=description.sdp)))

    async def _flush_candidates(
        self, conn: PreparedConnection, generation: int, batch: ICECandidateBatch
    ) -> None:
        await asyncio.sleep(CANDIDATE_FLUSH_DELAY)
        if conn is self._conn and generation == self._generation and not self._closed.is_set():
            self._send_signal(Signal(ice_candidate_batch=batch))

    # ----------------------------------------------------------------- the worker

    async def _process(self) -> None:
        while not self._closed.is_set():
            item = await self._inbox.get()
            try:
                if item is _Step.NEGOTIATE:
                    await self._negotiate()
                elif item is _Step.RESUME:
                    await resume_transports(self._pc)
                elif item is _Step.RESTART:
                    await self._restart()
                else:
                    await self._handle(item)
            except asyncio.CancelledError:
                raise
            except Exception:  # aiortc raises many kinds on a bad SDP; the session goes on
                logger.warning("session %s: could not process a message", self.other, exc_info=True)

    async def _handle(self, message: Message) -> None:
        payload = message.payload
        kind = payload.WhichOneof("payload_type")
        if kind == "bye":
            await self._shutdown("the other peer said bye", send_bye=False)
        elif kind == "signal":
            await self._on_signal(payload.signal)
        # A Join on an existing session needs nothing; Ack and Ping carry nothing for us.

    async def _negotiate(self) -> None:
        if self._closed.is_set():
            return
        if not self.impolite and not self._negotiated:
            # The impolite side makes the first offer; our Join makes sure it has a session.
            if not self._remote_offer_seen:
                self._send(MessagePayload(join=Join()), reliable=False)
            return
        if self._pc.signalingState != "stable":
            self._renegotiate = True  # checked again once the current exchange completes
            return
        await self._offer()

    async def _offer(self) -> None:
        self._renegotiate = False
        await self._describe(await self._pc.createOffer())

    def _needs_offer(self) -> bool:
        pending_track = any(t.mid is None and not t.stopped for t in self._pc.getTransceivers())
        return self._renegotiate or pending_track

    async def _on_signal(self, signal: Signal) -> None:
        if signal.generation_counter < self._generation:
            logger.debug("session %s: stale generation %s", self.other, signal.generation_counter)
            return
        data = signal.WhichOneof("data")
        if signal.generation_counter > self._generation:
            logger.info(
                "session %s: generation %s -> %s",
                self.other,
                self._generation,
                signal.generation_counter,
            )
            self._generation = signal.generation_counter
            self._remote.drop_pending()
            if data == "sdp" and signal.sdp.kind == SDP_KIND_OFFER and self._used():
                # The other side restarted ICE on a new connection: so must we (aiortc
                # cannot take new ICE credentials or DTLS parameters on this one).
                await self._replace()
        if data == "sdp":
            await self._on_sdp(signal.sdp)
        elif data == "ice_candidate":
            self._remote.add([signal.ice_candidate])
        elif data == "ice_candidate_batch":
            self._remote.add(signal.ice_candidate_batch.candidates)
        await self._remote.apply(self._pc)

    def _used(self) -> bool:
        pc = self._pc
        return pc.localDescription is not None or pc.remoteDescription is not None

    async def _on_sdp(self, sdp: Sdp) -> None:
        if sdp.kind == SDP_KIND_OFFER:
            if self._pc.signalingState != "stable":
                if self.impolite:
                    logger.debug("session %s: ignoring a colliding offer", self.other)
                    return
                if self._pc.remoteDescription is None:
                    await self._replace()  # a new connection's first offer: start afresh
                else:
                    rollback_local_offer(self._pc)
            if not self._may_answer_while_gathering(sdp.sdp):
                await self._conn.ready()
            await self._set_remote(RTCSessionDescription(sdp=sdp.sdp, type="offer"))
            mark_unoffered_inactive(self._pc)
            await self._describe(await self._pc.createAnswer())
        elif sdp.kind == SDP_KIND_ANSWER:
            if self._pc.signalingState != "have-local-offer":
                logger.debug("session %s: ignoring an answer to no offer", self.other)
                return
            await self._set_remote(RTCSessionDescription(sdp=sdp.sdp, type="answer"))
        else:
            logger.debug("session %s: ignoring SDP kind %s", self.other, sdp.kind)
            return
        self._negotiated = True
        if self._needs_offer():
            self._inbox.put_nowait(_Step.NEGOTIATE)

    def _may_answer_while_gathering(self, offer: str) -> bool:
        """Whether to answer ``offer`` before gathering ends (the answer then has no candidates:
        aioice reveals none before the end). When the offer has candidates, this side's ICE
        checks them the moment gathering ends, and the offerer, which has the answer by then,
        answers with checks of its own: a signaling hop saved. To an offer without them there
        is nothing to gain (the first check waits for this side's candidates either way) and
        one message more. And only when the offer keeps the transport that gathers."""
        return "a=candidate:" in offer and self._conn.keeps_transport(offer)

    async def _set_remote(self, description: RTCSessionDescription) -> None:
        await self._pc.setRemoteDescription(description)
        self._described_by_other = True
        self._remote.described(description.sdp)
