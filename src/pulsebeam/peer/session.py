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
- ``Bye`` closes the session without an answer.

Every signaling message and every local action that touches the RTCPeerConnection runs on one
worker task, in order, so aiortc never sees two negotiation steps at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from enum import Enum
from typing import Literal, Protocol

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
    mark_unoffered_inactive,
    resume_transports,
    rollback_local_offer,
    selected_path,
)
from pulsebeam.peer.candidates import (
    RemoteCandidate,
    candidate_key,
    local_candidates,
    parse_remote,
    sdp_ufrags,
)
from pulsebeam.peer.channel import DataChannel
from pulsebeam.peer.errors import PeerClosedError
from pulsebeam.peer.events import EventStream, first_of
from pulsebeam.peer.identity import PeerInfo, is_impolite
from pulsebeam.peer.reliable import SeqnumWindow
from pulsebeam.proto import (
    SDP_KIND_ANSWER,
    SDP_KIND_OFFER,
    Bye,
    ICECandidate,
    ICECandidateBatch,
    Join,
    Message,
    MessageHeader,
    MessagePayload,
    Sdp,
    Signal,
)

__all__ = ["INTERNAL_LABEL", "Session", "SessionLink"]

logger = logging.getLogger(__name__)

INTERNAL_LABEL = "__internal"
BYE_TIMEOUT = 2.0
# Closing deletes TURN allocations; with the TURN server gone each deletion would retry ~40 s.
PC_CLOSE_TIMEOUT = 3.0


class _Step(Enum):
    """Local work queued on the worker between messages."""

    NEGOTIATE = "check whether we must offer"
    RESUME = "start transports a racing handshake skipped"


class SessionLink(Protocol):
    """What a session needs from its peer: its identity, sending, and the close notice."""

    @property
    def info(self) -> PeerInfo: ...

    async def send_message(self, message: Message, *, bye: bool = False) -> None: ...

    def session_closed(self, session: Session) -> None: ...


class Session:
    """A WebRTC session with ``other``; created by :class:`pulsebeam.peer.Peer`, not directly."""

    def __init__(self, link: SessionLink, other: PeerInfo, configuration: RTCConfiguration) -> None:
        self.local = link.info
        self.other = other
        self.impolite = is_impolite(self.local, other)
        self.close_reason: str | None = None
        self._link = link
        self._pc = RTCPeerConnection(configuration)
        self._generation = 0
        self._next_seqnum = 0
        self._received = SeqnumWindow()
        self._negotiated = False
        self._remote_offer_seen = False
        self._renegotiate = False
        self._known_remote: set[str] = set()
        self._pending_remote: list[RemoteCandidate] = []
        self._remote_ufrags: set[str] = set()
        self._inbox: asyncio.Queue[Message | _Step] = asyncio.Queue()
        self._outbox: asyncio.Queue[Message] = asyncio.Queue()
        self._channels: EventStream[DataChannel] = EventStream()
        self._tracks: EventStream[MediaStreamTrack] = EventStream()
        self._states: EventStream[str] = EventStream()
        self._connected = asyncio.Event()
        self._closed = asyncio.Event()
        self._finished = asyncio.Event()
        self._closer: asyncio.Task[None] | None = None
        self._pc.on("datachannel", self._on_datachannel)
        self._pc.on("track", self._tracks.put)
        self._pc.on("connectionstatechange", self._on_connection_state)
        # Both sides open it at start (protocol), so SCTP is negotiated in the first exchange
        # and later channels need no renegotiation.
        self._internal = self._pc.createDataChannel(INTERNAL_LABEL)
        self._tasks = [
            asyncio.create_task(self._process(), name=f"session {other} worker"),
            asyncio.create_task(self._send_loop(), name=f"session {other} sender"),
        ]
        self._inbox.put_nowait(_Step.NEGOTIATE)

    # ----------------------------------------------------------------- public API

    @property
    def pc(self) -> RTCPeerConnection:
        """The aiortc connection itself, for what this class does not wrap (stats, codecs…)."""
        return self._pc

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
        return DataChannel(channel)

    def add_track(self, track: MediaStreamTrack) -> RTCRtpSender:
        """Send ``track`` (e.g. an aiortc ``VideoStreamTrack``); renegotiates the session."""
        self._check_open()
        sender = self._pc.addTrack(track)
        self._renegotiate = True
        self._inbox.put_nowait(_Step.NEGOTIATE)
        return sender

    def data_channels(self) -> EventStream[DataChannel]:
        """The channels the other side opens, as they open (single consumer)."""
        return self._channels

    def tracks(self) -> EventStream[MediaStreamTrack]:
        """The remote media tracks, as they arrive (single consumer)."""
        return self._tracks

    def connection_states(self) -> EventStream[str]:
        """Each new ``connectionState`` of the RTCPeerConnection, ending with ``closed``."""
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
        for task in self._tasks:
            if task is not current:
                task.cancel()
        if send_bye:
            bye = self._message(MessagePayload(bye=Bye()), reliable=False)
            try:
                async with asyncio.timeout(BYE_TIMEOUT):
                    await self._link.send_message(bye, bye=True)
            except (PulseBeamError, TimeoutError) as exc:
                logger.debug("session %s: Bye not delivered: %s", self.other, exc)
        try:
            async with asyncio.timeout(PC_CLOSE_TIMEOUT):
                await self._pc.close()
        except TimeoutError:
            logger.info("session %s: gave up waiting for the TURN server on close", self.other)
        self._channels.close()
        self._tracks.close()
        self._states.put("closed")
        self._states.close()
        self._link.session_closed(self)
        self._finished.set()

    def _check_open(self) -> None:
        if self._closed.is_set():
            raise PeerClosedError(f"session with {self.other} is closed: {self.close_reason}")

    # ----------------------------------------------------------------- aiortc events

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if channel.label != INTERNAL_LABEL:
            self._channels.put(DataChannel(channel))

    def _on_connection_state(self) -> None:
        state = self._pc.connectionState
        logger.debug("session %s: connection %s", self.other, state)
        if state == "closed":
            return  # reported by _shutdown, once
        self._states.put(state)
        if state == "connected":
            self._connected.set()
            self._inbox.put_nowait(_Step.RESUME)
        elif state == "failed":
            # aiortc cannot restart ICE (no new credentials on a live connection), so a failed
            # session ends; the application reconnects with Peer.connect().
            self._closer = asyncio.create_task(self._shutdown("ICE failed", send_bye=True))

    # ----------------------------------------------------------------- sending

    def _message(self, payload: MessagePayload, *, reliable: bool) -> Message:
        header = MessageHeader(
            src=self.local.to_proto(),
            dst=self.other.to_proto(),
            seqnum=self._next_seqnum,
            reliable=reliable,
        )
        self._next_seqnum = (self._next_seqnum + 1) % 2**32
        return Message(header=header, payload=payload)

    def _send(self, payload: MessagePayload, *, reliable: bool) -> None:
        self._outbox.put_nowait(self._message(payload, reliable=reliable))

    def _send_signal(self, signal: Signal) -> None:
        signal.generation_counter = self._generation
        self._send(MessagePayload(signal=signal), reliable=True)

    async def _send_loop(self) -> None:
        # One message at a time, so the other side receives them in seqnum order.
        while not self._closed.is_set():
            message = await self._outbox.get()
            try:
                await self._link.send_message(message)
            except PulseBeamError as exc:
                await self._shutdown(f"signaling failed: {exc}", send_bye=False)
                return

    def _send_description(self) -> None:
        description = self._pc.localDescription
        kind = SDP_KIND_OFFER if description.type == "offer" else SDP_KIND_ANSWER
        self._send_signal(Signal(sdp=Sdp(kind=kind, sdp=description.sdp)))
        candidates = local_candidates(description.sdp)
        if candidates:
            self._send_signal(Signal(ice_candidate_batch=ICECandidateBatch(candidates=candidates)))

    # ----------------------------------------------------------------- the worker

    async def _process(self) -> None:
        while not self._closed.is_set():
            item = await self._inbox.get()
            try:
                if item is _Step.NEGOTIATE:
                    await self._negotiate()
                elif item is _Step.RESUME:
                    await resume_transports(self._pc)
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
        self._renegotiate = False
        offer = await self._pc.createOffer()
        await self._pc.setLocalDescription(offer)
        self._send_description()

    def _needs_offer(self) -> bool:
        pending_track = any(t.mid is None and not t.stopped for t in self._pc.getTransceivers())
        return self._renegotiate or pending_track

    async def _on_signal(self, signal: Signal) -> None:
        if signal.generation_counter < self._generation:
            logger.debug("session %s: stale generation %s", self.other, signal.generation_counter)
            return
        if signal.generation_counter > self._generation:
            logger.info(
                "session %s: generation %s -> %s",
                self.other,
                self._generation,
                signal.generation_counter,
            )
            self._generation = signal.generation_counter
        data = signal.WhichOneof("data")
        if data == "sdp":
            await self._on_sdp(signal.sdp)
        elif data == "ice_candidate":
            self._on_candidates([signal.ice_candidate])
        elif data == "ice_candidate_batch":
            self._on_candidates(signal.ice_candidate_batch.candidates)
        await self._add_pending_candidates()

    async def _on_sdp(self, sdp: Sdp) -> None:
        if sdp.kind == SDP_KIND_OFFER:
            if self._pc.signalingState != "stable":
                if self.impolite:
                    logger.debug("session %s: ignoring a colliding offer", self.other)
                    return
                rollback_local_offer(self._pc)
            await self._set_remote(RTCSessionDescription(sdp=sdp.sdp, type="offer"))
            mark_unoffered_inactive(self._pc)
            answer = await self._pc.createAnswer()
            await self._pc.setLocalDescription(answer)
            self._send_description()
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

    async def _set_remote(self, description: RTCSessionDescription) -> None:
        await self._pc.setRemoteDescription(description)
        # aiortc applied the candidates inside the SDP; remember them to skip repeats.
        self._known_remote.update(
            candidate_key(line)
            for line in description.sdp.splitlines()
            if line.startswith("a=candidate:")
        )
        self._remote_ufrags = sdp_ufrags(description.sdp)

    def _on_candidates(self, candidates: Iterable[ICECandidate]) -> None:
        for message in candidates:
            remote = parse_remote(message)
            if remote is None or remote.key in self._known_remote:
                continue
            self._known_remote.add(remote.key)
            self._pending_remote.append(remote)

    async def _add_pending_candidates(self) -> None:
        if not self._pending_remote or self._pc.remoteDescription is None:
            return
        pending, self._pending_remote = self._pending_remote, []
        for remote in pending:
            if remote.ufrag is not None and remote.ufrag not in self._remote_ufrags:
                continue  # for another ICE generation than the remote description's
            with contextlib.suppress(ValueError):
                await self._pc.addIceCandidate(remote.candidate)
