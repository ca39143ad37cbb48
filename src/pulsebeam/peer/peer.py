"""The peer: one signaling connection (``Recv``) and the sessions it carries.

``create_peer`` calls ``Prepare`` and learns the peer's group and id from its token; ``start``
opens ``Recv`` (``create_peer(..., start=True)`` sends it while ``Prepare`` is under way, and
holds what arrives until ``Prepare`` has given the ICE servers that sessions need). A message
from an unknown connection creates a session (a ``Join`` included: the server sends one from
each peer that opens its stream, so the group forms a full mesh, as with the official SDK).
``connect`` sends ``Join`` to a peer about every second until a session with it exists: unlike
the official SDK, a callee that is not there yet (NOT_FOUND) is waited for, up to a timeout.
Right after ``Recv`` opens, the server's own ``Join`` broadcast has already announced this peer
to the group, so the first explicit ``Join`` waits a second for an answer to that. ``connect``
also prepares the session's RTCPeerConnection at once, so that ICE gathering runs during those
round trips (:mod:`pulsebeam.peer.prepared`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from enum import StrEnum
from types import TracebackType
from typing import Any

from aiortc import RTCConfiguration, RTCIceServer

from pulsebeam.auth import validate_id
from pulsebeam.errors import InvalidArgumentError, NotFoundError, PulseBeamError
from pulsebeam.peer.errors import PeerClosedError
from pulsebeam.peer.events import EventStream, first_of
from pulsebeam.peer.ice import IcePolicy
from pulsebeam.peer.identity import DISCOVERY_CONN_ID, RESERVED_CONN_IDS, PeerInfo
from pulsebeam.peer.pool import MAX_POOL_SIZE, ConnectionPool
from pulsebeam.peer.prepared import PreparedConnection
from pulsebeam.peer.session import BYE_TIMEOUT, Session
from pulsebeam.peer.signaling import SignalingClient
from pulsebeam.peer.tokens import TokenProvider, Tokens
from pulsebeam.proto import Bye, IceServer, Join, Message, MessageHeader, MessagePayload

__all__ = ["Peer", "PeerState", "create_peer"]

logger = logging.getLogger(__name__)

JOIN_INTERVAL = 1.0
# A closed session's connection is ignored this long, so its late messages make no new session.
CLOSED_SESSION_MEMORY = 10.0
TOKEN_RETRY_DELAY = 1.0
# Messages that arrive before Prepare has answered wait for it (a round trip or two); beyond
# this many, the rest are dropped, with a warning (each session's first messages are a few).
MAX_HELD_MESSAGES = 256


class PeerState(StrEnum):
    NEW = "new"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


async def create_peer(
    token: str,
    base_url: str,
    force_relay: bool = False,
    ice_servers: Sequence[RTCIceServer] | None = None,
    *,
    token_provider: TokenProvider | None = None,
    ice_candidate_pool_size: int = 1,
    start: bool = False,
) -> Peer:
    """Prepare a peer for ``token`` against the server at ``base_url`` (ending in ``/grpc``).

    ``ice_servers`` come first, then the ones ``Prepare`` returns (our TURN with credentials).
    aiortc is always given this explicit list, so it never falls back to a public STUN server.
    ``token_provider`` is awaited for a fresh token before the current one expires.
    ``ice_candidate_pool_size`` connections (0 to 4) are kept gathered for the next sessions
    once the peer starts (:mod:`pulsebeam.peer.pool`); each holds a TURN allocation when TURN
    is configured. ``start=True`` also starts the peer (:meth:`Peer.start`), sending ``Recv``
    while ``Prepare`` is under way: the peer is live one round trip to the server sooner. Either
    way, ``Prepare``'s failure (or a ``Recv`` refused meanwhile) raises here.
    """
    if not 0 <= ice_candidate_pool_size <= MAX_POOL_SIZE:
        raise InvalidArgumentError(
            f"ice_candidate_pool_size must be 0 to {MAX_POOL_SIZE}, got {ice_candidate_pool_size}"
        )
    tokens = Tokens(token, token_provider)
    info = PeerInfo.new_connection(tokens.identity.group_id, tokens.identity.peer_id)
    client = SignalingClient(base_url, tokens, info)
    ice = IcePolicy(tuple(ice_servers or ()), force_relay)
    peer = Peer(client, ice, ConnectionPool(ice_candidate_pool_size))
    # Prepare goes first: the ICE servers it answers with are what the first session waits for.
    prepare = asyncio.ensure_future(client.prepare())
    if start:
        peer.start()
    else:
        client.preconnect()  # for Recv, opened while Prepare runs on a connection of its own
    try:
        await peer._configure(prepare)
    except BaseException:
        prepare.cancel()
        await peer.close()
        await peer.wait_closed()  # a refused Recv may be closing it still: its sockets too
        raise
    return peer


class Peer:
    """A signaling connection; use :func:`create_peer` to make one."""

    def __init__(
        self,
        client: SignalingClient,
        ice: IcePolicy,
        pool: ConnectionPool,
    ) -> None:
        self._client = client
        self._ice = ice
        self._configuration: RTCConfiguration | None = None  # from Prepare, see _configure()
        self._held: list[Message] | None = []  # messages that came before it (then None)
        self._held_overflow = False
        self._pool = pool
        self._ice_refresh: asyncio.Task[None] | None = None
        client.tokens.on_update = self._token_updated
        self._info = client.info
        self._state = PeerState.NEW
        self._error: PulseBeamError | None = None
        self._sessions: dict[PeerInfo, Session] = {}
        # Made by connect() for the session with that (group, peer), taken when it starts.
        self._prepared: dict[tuple[str, str], PreparedConnection] = {}
        self._opened_at = 0.0
        self._recently_closed: dict[PeerInfo, float] = {}
        self._incoming: EventStream[Session] = EventStream()
        self._session_added = asyncio.Event()
        self._opened = asyncio.Event()
        self._closed = asyncio.Event()
        self._finished = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # ----------------------------------------------------------------- public API

    @property
    def info(self) -> PeerInfo:
        return self._info

    @property
    def group_id(self) -> str:
        return self._info.group_id

    @property
    def peer_id(self) -> str:
        return self._info.peer_id

    @property
    def state(self) -> PeerState:
        return self._state

    @property
    def error(self) -> PulseBeamError | None:
        """The fatal error that closed the peer, if one did."""
        return self._error

    @property
    def configuration(self) -> RTCConfiguration:
        """The ICE configuration: the given servers, then ``Prepare``'s (our TURN)."""
        if self._configuration is None:
            raise PeerClosedError(f"peer {self._info} has no ICE servers: create_peer failed")
        return self._configuration

    async def _configure(self, prepare: asyncio.Future[list[IceServer]]) -> None:
        """Take the ICE servers of ``prepare`` (a ``Prepare`` call): raises its error, or the one
        that closed the peer meanwhile (a started peer's ``Recv`` refused); then handles the
        messages held until now."""
        closed = asyncio.ensure_future(self._closed.wait())
        either: list[asyncio.Future[Any]] = [prepare, closed]
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
        if not prepare.done():
            self._check_open()  # the peer closed first: raises what closed it
        servers = prepare.result()  # raises Prepare's own error
        self._check_open()  # a Recv refused in the same loop turn: raises that
        if self._configuration is None:  # (else a token refresh has brought newer ones)
            self._configuration = self._ice.configuration(servers)
            self._pool.reconfigure(self._configuration)
        held, self._held = self._held or [], None
        for message in held:
            self._on_message(message)

    def start(self) -> None:
        """Open the receive stream (idempotent); needs a running event loop."""
        if self._state is not PeerState.NEW:
            return
        self._state = PeerState.CONNECTING
        self._tasks.append(asyncio.create_task(self._receive(), name=f"peer {self._info} recv"))
        # After the receive task's first step, which sends Recv (the server's Join to the other
        # peers goes out when it opens): making the pool's spare takes ~0.5 ms of this loop.
        asyncio.get_running_loop().call_soon(self._start_pool)
        if self._client.tokens.has_provider:
            self._tasks.append(
                asyncio.create_task(self._refresh_tokens(), name=f"peer {self._info} tokens")
            )

    def _start_pool(self) -> None:
        if not self._closed.is_set():
            self._pool.start()

    async def wait_ready(self) -> None:
        """Return once the server has accepted this peer's receive stream."""
        self.start()
        await first_of(self._opened, self._closed)
        self._check_open()

    def sessions(self) -> EventStream[Session]:
        """Every new session, incoming or from :meth:`connect` (single consumer).

        The iteration ends when the peer closes, raising the fatal error if one closed it.
        """
        return self._incoming

    def session_with(self, group_id: str, peer_id: str) -> Session | None:
        """The newest open session with that peer, if any."""
        found = [
            s
            for info, s in self._sessions.items()
            if (info.group_id, info.peer_id) == (group_id, peer_id) and not s.closed
        ]
        return found[-1] if found else None

    async def connect(self, group_id: str, peer_id: str, give_up_after: float = 30.0) -> Session:
        """A session with ``group_id/peer_id``, waiting up to ``give_up_after`` s for it.

        Raises ``PermissionDeniedError`` when this peer's own policy forbids it, and
        ``TimeoutError`` when the peer never shows up — which is also what a peer whose policy
        hides this one looks like (the server answers as for an absent peer, so that presence
        does not leak) — and the fatal error if this peer closes meanwhile.
        """
        validate_id(group_id, "group_id")
        validate_id(peer_id, "peer_id")
        if (group_id, peer_id) == (self.group_id, self.peer_id):
            raise InvalidArgumentError("a peer cannot connect to itself")
        self.start()
        await asyncio.sleep(0)  # a receive stream just started sends its request first
        join = self._outside_sessions(
            PeerInfo(group_id, peer_id, DISCOVERY_CONN_ID), MessagePayload(join=Join())
        )
        last_error: PulseBeamError | None = None
        target = (group_id, peer_id)
        prepared = None
        if self.session_with(group_id, peer_id) is None and target not in self._prepared:
            prepared = self._pool.take() or PreparedConnection(self.configuration)
            self._prepared[target] = prepared
        try:
            async with asyncio.timeout(give_up_after):
                while True:
                    self._check_open()
                    self._session_added.clear()  # before the check: no addition is missed
                    session = self.session_with(group_id, peer_id)
                    if session is not None:
                        return session
                    waits = [self._session_added, self._closed]
                    if not self._opened.is_set():
                        waits.append(self._opened)  # send the Join as soon as Recv is open
                    elif time.monotonic() - self._opened_at >= JOIN_INTERVAL:
                        try:
                            await self._client.send(join, retry_not_found=False)
                        except NotFoundError as exc:
                            last_error = exc  # not there yet: try again in a second
                    # else: the server's Join broadcast of a moment ago is on its way.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(JOIN_INTERVAL):
                            await first_of(*waits)
        except TimeoutError:
            detail = f" (last answer: {last_error})" if last_error is not None else ""
            raise TimeoutError(
                f"no session with {group_id}/{peer_id} within {give_up_after:g} s{detail}"
            ) from None
        finally:
            if prepared is not None and self._prepared.get(target) is prepared:
                del self._prepared[target]  # no session took it
                await prepared.close()

    def update_token(self, token: str) -> None:
        """Use ``token`` (same group and peer) for every call from now on."""
        self._client.tokens.update(token)

    async def wait_closed(self) -> PulseBeamError | None:
        """Wait until the peer has closed with its sessions; returns the fatal error, if any."""
        await self._finished.wait()
        return self._error

    async def close(self, reason: str = "peer closed") -> None:
        """Close every session (each says ``Bye``) and the signaling connection."""
        await self._close(reason, None)

    async def __aenter__(self) -> Peer:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"Peer({self._info}, {self._state.value}, sessions={len(self._sessions)})"

    # ----------------------------------------------------------------- SessionLink

    async def send_message(self, message: Message, *, bye: bool = False) -> None:
        # A Bye is best effort: one attempt, no retries on a peer that is going away.
        await self._client.send(message, retry_not_found=not bye, deadline=0.0 if bye else 10.0)

    def session_closed(self, session: Session) -> None:
        if self._sessions.get(session.other) is session:
            del self._sessions[session.other]
            self._recently_closed[session.other] = time.monotonic()

    # ----------------------------------------------------------------- internals

    def _check_open(self) -> None:
        if self._closed.is_set():
            if self._error is not None:
                raise self._error
            raise PeerClosedError(f"peer {self._info} is closed")

    async def _receive(self) -> None:
        try:
            await self._client.receive(self._on_message, self._on_open, self._on_lost)
        except PulseBeamError as exc:
            logger.warning("peer %s: signaling ended: %s", self._info, exc)
            await self._close(f"signaling ended: {exc}", exc)

    def _on_open(self) -> None:
        self._state = PeerState.CONNECTED
        self._opened_at = time.monotonic()
        self._opened.set()

    def _token_updated(self) -> None:
        # The TURN credential of the old token expires with it: ask Prepare for a new one.
        if self._closed.is_set():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop, no sessions to create yet; create_peer's list is current enough
        if self._ice_refresh is not None:
            self._ice_refresh.cancel()
        self._ice_refresh = loop.create_task(self._refresh_ice_servers())

    async def _refresh_ice_servers(self) -> None:
        try:
            self._configuration = self._ice.configuration(await self._client.prepare())
            self._pool.reconfigure(self._configuration)
        except PulseBeamError as exc:
            logger.warning("peer %s: could not renew the ICE servers: %s", self._info, exc)

    def _on_lost(self, error: PulseBeamError) -> None:
        self._state = PeerState.RECONNECTING
        self._opened.clear()

    def _on_message(self, message: Message) -> None:
        if not message.HasField("header"):
            return  # a keepalive Ping
        if self._held is not None:  # before Prepare's ICE servers, which sessions need
            if len(self._held) < MAX_HELD_MESSAGES:
                self._held.append(message)
            elif not self._held_overflow:
                self._held_overflow = True
                logger.warning(
                    "peer %s: over %d messages before Prepare answered: dropping the rest",
                    self._info,
                    MAX_HELD_MESSAGES,
                )
            return
        src, dst = message.header.src, message.header.dst
        if dst.conn_id > RESERVED_CONN_IDS and dst.conn_id != self._info.conn_id:
            logger.debug("peer %s: message for stale connection %s", self._info, dst.conn_id)
            return
        if src.peer_id == self.peer_id and src.group_id == self.group_id:
            return  # our own id: another connection of the same peer, never a session
        other = PeerInfo.from_proto(src)
        session = self._sessions.get(other)
        if session is None:
            if self._is_recently_closed(other):
                return
            if message.payload.WhichOneof("payload_type") in ("bye", "ack", None):
                return
            prepared = self._prepared.pop((other.group_id, other.peer_id), None)
            prepared = prepared or self._pool.take()
            session = Session(self, other, self.configuration, prepared)
            self._sessions[other] = session
            logger.info("peer %s: new session with %s", self._info, other)
            self._incoming.put(session)
            self._session_added.set()
        session.deliver(message)

    def _is_recently_closed(self, other: PeerInfo) -> bool:
        now = time.monotonic()
        for info, at in list(self._recently_closed.items()):
            if now - at > CLOSED_SESSION_MEMORY:
                del self._recently_closed[info]
        return other in self._recently_closed

    async def _say_bye_to_held(self, held: list[Message]) -> None:
        """Say ``Bye`` to the peers whose messages were held and never handled (``create_peer``
        failed after ``Recv`` opened): their sessions with this peer end now, not at their
        setup timeout."""
        others = {
            PeerInfo.from_proto(message.header.src)
            for message in held
            if message.payload.WhichOneof("payload_type") not in ("bye", None)
        }
        await asyncio.gather(*(self._say_bye(other) for other in others))

    async def _say_bye(self, other: PeerInfo) -> None:
        bye = self._outside_sessions(other, MessagePayload(bye=Bye()))
        try:
            async with asyncio.timeout(BYE_TIMEOUT):
                await self.send_message(bye, bye=True)
        except (PulseBeamError, TimeoutError) as exc:
            logger.debug("peer %s: Bye to %s not delivered: %s", self._info, other, exc)

    def _outside_sessions(self, other: PeerInfo, payload: MessagePayload) -> Message:
        """A message that belongs to no session (a ``Join`` or a ``Bye``): unreliable, no seqnum."""
        header = MessageHeader(src=self._info.to_proto(), dst=other.to_proto(), reliable=False)
        return Message(header=header, payload=payload)

    async def _refresh_tokens(self) -> None:
        tokens = self._client.tokens
        while True:
            await asyncio.sleep(tokens.seconds_until_refresh())
            try:
                if not await tokens.refresh():
                    await asyncio.sleep(TOKEN_RETRY_DELAY)
            except Exception:  # the application's provider may fail in any way; retry soon
                logger.warning("peer %s: token refresh failed", self._info, exc_info=True)
                await asyncio.sleep(TOKEN_RETRY_DELAY)

    async def _close(self, reason: str, error: PulseBeamError | None) -> None:
        if self._closed.is_set():
            return
        self._error = error
        self._state = PeerState.CLOSED
        self._closed.set()
        current = asyncio.current_task()
        for task in [*self._tasks, self._ice_refresh]:
            if task is not None and task is not current:
                task.cancel()
        sessions = list(self._sessions.values())
        prepared, self._prepared = list(self._prepared.values()), {}
        held, self._held = self._held or [], None
        await asyncio.gather(
            *(s.close(reason, say_bye=error is None) for s in sessions),
            *(p.close() for p in prepared),
            *([self._say_bye_to_held(held)] if held and error is None else []),
            self._pool.close(),
            return_exceptions=True,
        )
        self._incoming.close(error)
        await self._client.aclose()
        self._finished.set()
