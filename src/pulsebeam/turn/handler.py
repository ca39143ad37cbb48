"""STUN/TURN request processing, independent of the transport a message came on.

Binding needs no credentials; Allocate, Refresh, CreatePermission and ChannelBind need long-term
credentials (:mod:`pulsebeam.turn.auth`); Send indications are accepted only on an existing
allocation and towards a permitted peer. A credential's expiry limits new allocations: requests on
an existing allocation with the username that created it are accepted after that expiry (key still
live, same HMAC) until the allocation is ``max_session`` seconds old, because a live ICE agent
keeps the credential it started with however often its application refreshes the token.

Answers follow RFC 8656: 437 without an allocation (or when one exists for an Allocate), 441 for
a different credential than the allocation's, 442 for a transport other than UDP, 440/443 for
address families, 403 for a peer the :class:`~pulsebeam.turn.peerfilter.PeerFilter` refuses, 486
over a quota, 508 without a port.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

from pulsebeam.turn.allocation import Allocation, ClientLink
from pulsebeam.turn.attributes import (
    FAMILY_IPV4,
    TRANSPORT_UDP,
    Address,
    decode_channel_number,
    decode_even_port,
    decode_family,
    decode_u32,
    decode_xor_address,
    encode_address,
    encode_error_code,
    encode_u32,
    encode_unknown_attributes,
    encode_xor_address,
)
from pulsebeam.turn.auth import Authenticator, AuthFailure, Identity, RateLimiter
from pulsebeam.turn.channeldata import CHANNEL_MAX, CHANNEL_MIN
from pulsebeam.turn.manager import AllocateError, AllocationManager
from pulsebeam.turn.metrics import TurnMetrics
from pulsebeam.turn.peerfilter import PeerFilter
from pulsebeam.turn.stun import Attr, Message, MessageClass, Method, StunDecodeError, parse_message

__all__ = ["DEFAULT_LIFETIME", "MAX_PERMISSIONS", "RequestHandler"]

logger = logging.getLogger(__name__)

DEFAULT_LIFETIME = 600  # seconds, RFC 8656 section 3.2
PERMISSION_LIFETIME = 300.0  # RFC 8656 section 9
CHANNEL_LIFETIME = 600.0  # RFC 8656 section 12
SOFTWARE = b"pulsebeam"
# A 420 names at most this many unknown attributes: one datagram can carry thousands, and
# listing them all would overflow the answer and amplify an unauthenticated request.
MAX_UNKNOWN_LISTED = 8
# Peers one allocation may be permitted to reach: a client needs a handful (its peer's
# candidates); without a cap, CreatePermission requests could grow the table without end.
MAX_PERMISSIONS = 1000
_TURN_METHODS = frozenset(
    {Method.ALLOCATE, Method.REFRESH, Method.CREATE_PERMISSION, Method.CHANNEL_BIND}
)


class _Reject(Exception):
    def __init__(self, code: int, reason: str, unknown: list[int] | None = None) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason
        self.unknown = unknown or []  # for 420: the UNKNOWN-ATTRIBUTES


class RequestHandler:
    """``handle_stun(data, link)`` for every STUN message a listener receives."""

    def __init__(
        self,
        *,
        authenticator: Authenticator,
        auth_limiter: RateLimiter,
        challenge_limiter: RateLimiter | None,
        peer_filter: PeerFilter,
        manager: AllocationManager,
        metrics: TurnMetrics,
        max_lifetime: int,
        max_session: int,
    ) -> None:
        self._auth = authenticator
        self._limiter = auth_limiter
        self._challenge_limiter = challenge_limiter  # None: challenges are not limited
        self._filter = peer_filter
        self._manager = manager
        self._metrics = metrics
        self._max_lifetime = max_lifetime
        self._max_session = max_session
        self._tasks: set[asyncio.Task[None]] = set()
        # The server's own UDP listener as a peer (set by TurnServer.start): relaying into it
        # would let a client talk TURN to us from our own relay address.
        self.own_addresses: frozenset[Address] = frozenset()

    async def cancel_pending(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- entry ----------------------------------------------------------------------------------
    def handle_stun(self, data: bytes, link: ClientLink) -> None:
        try:
            msg = parse_message(data)
        except StunDecodeError as exc:
            self._metrics.malformed.inc()
            logger.debug("dropped from %s: %s", link.five_tuple[1], exc)
            return
        if msg.message_class == MessageClass.INDICATION:
            if msg.method == Method.SEND:
                self._send_indication(msg, link)
            return
        if msg.message_class != MessageClass.REQUEST:
            return
        identity: Identity | None = None
        try:
            if msg.method == Method.BINDING:
                self._check_unknown(msg)
                self._binding(msg, link)
                return
            if msg.method not in _TURN_METHODS:
                raise _Reject(400, f"Bad Request: method 0x{msg.method:03x} is not supported")
            identity = self._authenticate(msg, link)
            if identity is None:
                return
            self._check_unknown(msg)
            if msg.method == Method.ALLOCATE:
                self._allocate(msg, link, identity)
            elif msg.method == Method.REFRESH:
                self._refresh(msg, link, identity)
            elif msg.method == Method.CREATE_PERMISSION:
                self._create_permission(msg, link, identity)
            else:
                self._channel_bind(msg, link, identity)
        except _Reject as exc:
            extra: list[tuple[int, bytes]] = []
            if exc.unknown:
                extra.append((Attr.UNKNOWN_ATTRIBUTES, encode_unknown_attributes(exc.unknown)))
            self._error(msg, link, exc.code, exc.reason, identity, extra)
        except StunDecodeError as exc:
            self._error(msg, link, 400, f"Bad Request: {exc}", identity)

    def _authenticate(self, msg: Message, link: ClientLink) -> Identity | None:
        client_ip = link.five_tuple[1][0]
        try:
            return self._auth.authenticate(msg, client_ip, renewable=self._renewable(msg, link))
        except AuthFailure as failure:
            if failure.limited:
                limiter: RateLimiter | None = self._limiter
            elif failure.code == 401:
                # The challenge to a request without credentials: a 20-byte request draws a
                # ~140-byte answer, so unlimited it would amplify traffic sent with a spoofed
                # source. Past the limit, silence: any answer would be the amplification.
                limiter = self._challenge_limiter
            else:
                limiter = None
            if limiter is not None and not limiter.allow(client_ip):
                self._metrics.rate_limited.inc()
                return None
            if failure.code == 401:
                self._metrics.unauthorized.inc()
            extra = self._auth.challenge_attributes(client_ip) if failure.challenge else []
            self._error(msg, link, failure.code, failure.reason, None, extra)
            return None

    def _renewable(self, msg: Message, link: ClientLink) -> str | None:
        """The username whose expired credential this request may still use: that of the
        5-tuple's allocation, while the allocation is younger than ``max_session``."""
        if msg.method == Method.ALLOCATE:
            return None  # a new allocation always needs an unexpired credential
        allocation = self._manager.get(link.five_tuple)
        if allocation is None or self._session_left(allocation) <= 0:
            return None
        return allocation.username

    def _session_left(self, allocation: Allocation) -> float:
        return allocation.created_at + self._max_session - time.monotonic()

    @staticmethod
    def _check_unknown(msg: Message) -> None:
        unknown = msg.unknown_required()[:MAX_UNKNOWN_LISTED]
        if unknown:
            names = ", ".join(f"0x{t:04x}" for t in unknown)
            raise _Reject(420, f"Unknown Attribute: {names}", unknown)

    # -- answers --------------------------------------------------------------------------------
    def _reply(
        self,
        msg: Message,
        link: ClientLink,
        attributes: list[tuple[int, bytes]],
        identity: Identity | None,
        cls: int = MessageClass.SUCCESS,
    ) -> bytes:
        answer = Message(msg.method, cls, msg.transaction_id, attributes)
        answer.add(Attr.SOFTWARE, SOFTWARE)
        if identity is None:
            data = answer.encode()
        else:
            data = answer.encode(identity.key, sha1=identity.sha1, sha256=identity.sha256)
        link.send(data)
        return data

    def _error(
        self,
        msg: Message,
        link: ClientLink,
        code: int,
        reason: str,
        identity: Identity | None,
        extra: list[tuple[int, bytes]] | None = None,
    ) -> None:
        attributes = [(Attr.ERROR_CODE, encode_error_code(code, reason)), *(extra or [])]
        self._reply(msg, link, attributes, identity, MessageClass.ERROR)

    # -- methods --------------------------------------------------------------------------------
    def _binding(self, msg: Message, link: ClientLink) -> None:
        source = link.five_tuple[1]
        attributes: list[tuple[int, bytes]] = [
            (Attr.XOR_MAPPED_ADDRESS, encode_xor_address(source, msg.transaction_id)),
            (Attr.MAPPED_ADDRESS, encode_address(source)),  # for RFC 3489 clients
        ]
        self._reply(msg, link, attributes, None)

    def _lifetime(self, msg: Message) -> int:
        raw = msg.get(Attr.LIFETIME)
        requested = DEFAULT_LIFETIME if raw is None else decode_u32(raw, "LIFETIME")
        return min(requested, self._max_lifetime)

    def _allocation_of(self, link: ClientLink, identity: Identity) -> Allocation:
        allocation = self._manager.get(link.five_tuple)
        if allocation is None:
            raise _Reject(437, "Allocation Mismatch: no allocation for this 5-tuple")
        if allocation.username != identity.username:
            raise _Reject(441, "Wrong Credentials: not the allocation's credentials")
        return allocation

    def _allocate(self, msg: Message, link: ClientLink, identity: Identity) -> None:
        existing = self._manager.get(link.five_tuple)
        if existing is not None:
            if existing.last_allocate and existing.last_allocate[0] == msg.transaction_id:
                link.send(existing.last_allocate[1])  # a retransmission: same answer
                return
            raise _Reject(437, "Allocation Mismatch: this 5-tuple already has an allocation")
        if self._manager.is_pending(link.five_tuple):
            return  # a retransmission while the first copy is being served
        transport = msg.get(Attr.REQUESTED_TRANSPORT)
        if transport is None:
            raise _Reject(400, "Bad Request: REQUESTED-TRANSPORT is required")
        if len(transport) != 4 or transport[0] != TRANSPORT_UDP:
            raise _Reject(442, "Unsupported Transport Protocol: only UDP relays are offered")
        if msg.get(Attr.RESERVATION_TOKEN) is not None:
            raise _Reject(508, "Insufficient Capacity: port reservations are not offered")
        even = msg.get(Attr.EVEN_PORT)
        if even is not None and decode_even_port(even):
            raise _Reject(508, "Insufficient Capacity: port reservations are not offered")
        family = msg.get(Attr.REQUESTED_ADDRESS_FAMILY)
        if family is not None and decode_family(family) != FAMILY_IPV4:
            raise _Reject(440, "Address Family not Supported: this server relays over IPv4")
        dont_fragment = msg.get(Attr.DONT_FRAGMENT) is not None
        if dont_fragment and not self._manager.can_dont_fragment:
            raise _Reject(420, "Unknown Attribute: DONT-FRAGMENT", [Attr.DONT_FRAGMENT])
        lifetime = self._lifetime(msg)
        task = asyncio.get_running_loop().create_task(
            self._finish_allocate(
                msg,
                link,
                identity,
                lifetime=max(lifetime, 1),
                even_port=even is not None,
                dont_fragment=dont_fragment,
            )
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finish_allocate(
        self,
        msg: Message,
        link: ClientLink,
        identity: Identity,
        *,
        lifetime: int,
        even_port: bool,
        dont_fragment: bool,
    ) -> None:
        try:
            allocation = await self._manager.create(
                link, identity, lifetime=lifetime, even_port=even_port, dont_fragment=dont_fragment
            )
        except AllocateError as exc:
            self._error(msg, link, exc.code, exc.reason, identity)
            return
        if not link.alive:  # the TCP/TLS connection closed while the relay was being bound
            self._manager.remove(allocation)
            return
        if not self._auth.key_is_live(identity.key_id):
            # Revoked while the relay was being bound, when revoke_key could not see it yet.
            self._manager.remove(allocation)
            extra = self._auth.challenge_attributes(link.five_tuple[1][0])
            self._error(msg, link, 401, "API key revoked or unknown", None, extra)
            return
        tid = msg.transaction_id
        attributes: list[tuple[int, bytes]] = [
            (Attr.XOR_RELAYED_ADDRESS, encode_xor_address(allocation.relayed_address, tid)),
            (Attr.LIFETIME, encode_u32(lifetime)),
            (Attr.XOR_MAPPED_ADDRESS, encode_xor_address(link.five_tuple[1], tid)),
        ]
        allocation.last_allocate = (tid, self._reply(msg, link, attributes, identity))

    def _refresh(self, msg: Message, link: ClientLink, identity: Identity) -> None:
        allocation = self._allocation_of(link, identity)
        family = msg.get(Attr.REQUESTED_ADDRESS_FAMILY)
        if family is not None and decode_family(family) != FAMILY_IPV4:
            raise _Reject(443, "Peer Address Family Mismatch: the allocation is IPv4")
        lifetime = self._lifetime(msg)
        if lifetime and identity.renewed:
            # On an expired credential the allocation may not outlive its session bound.
            lifetime = min(lifetime, max(1, math.ceil(self._session_left(allocation))))
        if lifetime == 0:
            self._manager.remove(allocation)
        else:
            allocation.expires_at = time.monotonic() + lifetime
        self._reply(msg, link, [(Attr.LIFETIME, encode_u32(lifetime))], identity)

    def _peer(self, msg: Message, value: bytes) -> Address:
        peer = decode_xor_address(value, msg.transaction_id)
        reason = self._filter.refusal(peer[0])
        if reason is not None:
            self._metrics.refused_peers.inc()
            logger.info("refused TURN peer %s: %s", peer[0], reason)
            raise _Reject(403, f"Forbidden: {reason}")
        if ":" in peer[0]:
            raise _Reject(443, "Peer Address Family Mismatch: the relay is IPv4")
        return peer

    @staticmethod
    def _check_room(allocation: Allocation, hosts: set[str]) -> None:
        added = len(hosts - allocation.permissions.keys())
        if added and len(allocation.permissions) + added > MAX_PERMISSIONS:
            raise _Reject(
                508, f"Insufficient Capacity: at most {MAX_PERMISSIONS} permissions per allocation"
            )

    def _create_permission(self, msg: Message, link: ClientLink, identity: Identity) -> None:
        allocation = self._allocation_of(link, identity)
        values = msg.get_all(Attr.XOR_PEER_ADDRESS)
        if not values:
            raise _Reject(400, "Bad Request: XOR-PEER-ADDRESS is required")
        peers = [self._peer(msg, value) for value in values]  # all or nothing
        self._check_room(allocation, {host for host, _port in peers})
        deadline = time.monotonic() + PERMISSION_LIFETIME
        for host, _port in peers:
            allocation.add_permission(host, deadline)
        self._reply(msg, link, [], identity)

    def _channel_bind(self, msg: Message, link: ClientLink, identity: Identity) -> None:
        allocation = self._allocation_of(link, identity)
        raw_channel = msg.get(Attr.CHANNEL_NUMBER)
        raw_peer = msg.get(Attr.XOR_PEER_ADDRESS)
        if raw_channel is None or raw_peer is None:
            raise _Reject(400, "Bad Request: CHANNEL-NUMBER and XOR-PEER-ADDRESS are required")
        channel = decode_channel_number(raw_channel)
        if not CHANNEL_MIN <= channel <= CHANNEL_MAX:
            raise _Reject(400, f"Bad Request: channel 0x{channel:04x} outside 0x4000-0x7FFF")
        peer = self._peer(msg, raw_peer)
        if peer in self.own_addresses:
            self._metrics.refused_peers.inc()
            raise _Reject(403, "Forbidden: the TURN server's own listener")
        bound = allocation.channels.get(channel)
        if bound is not None and bound != peer:
            raise _Reject(400, "Bad Request: the channel is bound to another peer")
        other = allocation.peer_channels.get(peer)
        if other is not None and other != channel:
            raise _Reject(400, "Bad Request: the peer is bound to another channel")
        self._check_room(allocation, {peer[0]})
        now = time.monotonic()
        allocation.bind_channel(channel, peer, now + CHANNEL_LIFETIME, now + PERMISSION_LIFETIME)
        self._reply(msg, link, [], identity)

    def _send_indication(self, msg: Message, link: ClientLink) -> None:
        allocation = self._manager.get(link.five_tuple)
        raw_peer, data = msg.get(Attr.XOR_PEER_ADDRESS), msg.get(Attr.DATA)
        if allocation is None or raw_peer is None or data is None:
            return
        try:
            peer = decode_xor_address(raw_peer, msg.transaction_id)
        except StunDecodeError:
            return
        if peer not in self.own_addresses:
            allocation.from_client_send(peer, data)
