"""The rules of ``pulsebeam.v1.Signaling``: who may call, whom they may reach, what gets through.

Transport-free: the gRPC-Web layer (:mod:`.grpcweb`) decodes requests and encodes answers; this
module takes parsed messages and raises :mod:`pulsebeam.errors` exceptions, each with its gRPC
status (shared/PROTOCOL.md §3 lists the codes the official SDK treats as fatal).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pulsebeam import proto
from pulsebeam.auth import TokenVerifier, VerifiedToken, decode_unverified, validate_id
from pulsebeam.auth.keys import is_key_id
from pulsebeam.config import SignalingConfig
from pulsebeam.control.events import BanAdded, BanRemoved, ControlEvent, KeyDeleted
from pulsebeam.control.records import BanInfo
from pulsebeam.errors import (
    GrpcStatus,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    TokenError,
    UnavailableError,
    UnknownKeyError,
)
from pulsebeam.signaling.analytics import check_reports, record_reports
from pulsebeam.signaling.connection_log import ConnectionLog
from pulsebeam.signaling.directory import BanList, KeyDirectory
from pulsebeam.signaling.limits import RateLimiter
from pulsebeam.signaling.metrics import SignalingMetrics
from pulsebeam.signaling.records import Recorder
from pulsebeam.signaling.router import Presence, Router
from pulsebeam.signaling.streams import (
    Address,
    Hub,
    Stream,
    StreamClock,
    StreamSink,
    StreamTimes,
)
from pulsebeam.turn.credentials import IceServer

__all__ = ["Caller", "IceServerSource", "SignalingService"]

logger = logging.getLogger(__name__)

IceServerSource = Callable[[str, str, int], Sequence[IceServer]]
"""(key id, project id, token expiry) -> the ICE servers ``Prepare`` hands out."""

MAX_RESERVED_CONN_ID = 16
_PING = proto.RecvResp(msg=proto.Message(payload=proto.MessagePayload(ping=proto.Ping())))
PING_BYTES = _PING.SerializeToString()


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller: its verified token and the project owning the token's key."""

    token: VerifiedToken
    project_id: str

    def log_fields(self) -> dict[str, str]:
        return {
            "project": self.project_id,
            "group": self.token.group_id,
            "peer": self.token.peer_id,
        }


def _no_stream(dst: Address) -> NotFoundError:
    return NotFoundError(
        f"peer {dst.group_id}/{dst.peer_id}"
        + (f" connection {dst.conn_id}" if dst.conn_id else "")
        + " has no open Recv stream"
    )


def _peer_info(address: Address) -> proto.PeerInfo:
    return proto.PeerInfo(
        group_id=address.group_id, peer_id=address.peer_id, conn_id=address.conn_id
    )


class SignalingService:
    def __init__(
        self,
        *,
        config: SignalingConfig,
        verifier: TokenVerifier,
        keys: KeyDirectory,
        bans: BanList,
        router: Router,
        hub: Hub,
        recorder: Recorder,
        metrics: SignalingMetrics,
        ice_servers: IceServerSource,
        token_leeway_secs: float = 5.0,
        on_key_deleted: Callable[[str], None] | None = None,
    ) -> None:
        self._config = config
        self._verifier = verifier
        self._keys = keys
        self._bans = bans
        self._router = router
        self._hub = hub
        self._recorder = recorder
        self._metrics = metrics
        self._ice_servers = ice_servers
        self._leeway = token_leeway_secs
        self._on_key_deleted = on_key_deleted
        self._send_limiter = RateLimiter(config.send_rate, config.send_burst)
        self._recv_limiter = RateLimiter(config.recv_rate, config.recv_burst)
        self._analytics_limiter = RateLimiter(config.analytics_rate, config.analytics_burst)
        self._connection_log = ConnectionLog(recorder)
        self._stopping = False
        self._releasing: set[asyncio.Task[None]] = set()
        self._clock = StreamClock()

    # -- authentication ---------------------------------------------------------------------

    async def authenticate(self, authorization: str | None) -> Caller:
        """Verify the bearer token of a call; every method, ``Recv`` included, goes through here."""
        if not authorization:
            raise TokenError("missing 'authorization: Bearer <token>' header")
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise TokenError("the authorization header must be 'Bearer <token>'")
        try:
            claims = self._verifier.verify(token)
        except UnknownKeyError:
            # Maybe a key created since the directory was loaded: fetch it once, then retry.
            kid = decode_unverified(token).header.get("kid")
            if not (isinstance(kid, str) and is_key_id(kid) and await self._keys.ensure(kid)):
                raise
            claims = self._verifier.verify(token)
        project_id = self._keys.project_of(claims.key_id)
        if project_id is None:  # deleted between verify and here
            raise UnknownKeyError(f"token key {claims.key_id} is unknown or has been deleted")
        caller = Caller(claims, project_id)
        self._check_live(caller)
        self._recorder.key_used(claims.key_id)
        return caller

    def _check_live(self, caller: Caller) -> None:
        """Refuse a caller whose key was deleted or who was banned since it was authenticated.

        The transport authenticates before it reads the request body, and a handler may await
        (the router, the body) before it acts: a ``KeyDeleted`` or ``BanAdded`` event can run in
        between. Handlers call this after their last such await, before they act.
        """
        token = caller.token
        if self._keys.project_of(token.key_id) != caller.project_id:
            raise UnknownKeyError(f"token key {token.key_id} is unknown or has been deleted")
        if self._bans.matching(caller.project_id, token.group_id, token.peer_id) is not None:
            raise PermissionDeniedError(
                f"peer {token.group_id}/{token.peer_id} is banned from this project"
            )

    @staticmethod
    def _peer_key(caller: Caller) -> tuple[str, str, str]:
        """The rate limiters' key: the token's identity, which the caller cannot vary at will."""
        return (caller.project_id, caller.token.group_id, caller.token.peer_id)

    # -- Prepare ------------------------------------------------------------------------------

    async def prepare(self, caller: Caller, request: proto.PrepareReq) -> proto.PrepareResp:
        self._check_live(caller)
        servers = self._ice_servers(caller.token.key_id, caller.project_id, caller.token.expires_at)
        response = proto.PrepareResp()
        for server in servers:
            entry = response.ice_servers.add(urls=list(server.urls))
            if server.username is not None:
                entry.username = server.username
            if server.credential is not None:
                entry.credential = server.credential
        return response

    # -- Send -----------------------------------------------------------------------------------

    async def send(self, caller: Caller, request: proto.SendReq) -> proto.SendResp:
        # The hot path of the server: each protobuf accessor below builds a wrapper object,
        # so every submessage is read once.
        if not request.HasField("msg"):
            raise InvalidArgumentError("SendReq.msg is required")
        msg = request.msg
        size = msg.ByteSize()
        if size > self._config.max_message_bytes:
            self._metrics.message("too_large")
            raise ResourceExhaustedError(
                f"message is {size} bytes, over the {self._config.max_message_bytes}-byte limit"
            )
        if not msg.HasField("header"):
            raise InvalidArgumentError("msg.header is required")
        header = msg.header
        if not header.HasField("src") or not header.HasField("dst"):
            raise InvalidArgumentError("msg.header.src and msg.header.dst are both required")
        kind = msg.payload.WhichOneof("payload_type") if msg.HasField("payload") else None
        if kind is None:
            raise InvalidArgumentError(
                "msg.payload must carry one of signal, join, bye, ack or ping"
            )
        src = self._own_address(caller, header.src, "msg.header.src")
        dst_info = header.dst
        dst = Address(
            caller.project_id,
            validate_id(dst_info.group_id, "msg.header.dst.group_id"),
            validate_id(dst_info.peer_id, "msg.header.dst.peer_id"),
            dst_info.conn_id,
        )
        if 0 < dst.conn_id <= MAX_RESERVED_CONN_ID:
            raise InvalidArgumentError(
                f"msg.header.dst.conn_id {dst.conn_id} is reserved: use 0 (newest connection)"
                f" or a connection id above {MAX_RESERVED_CONN_ID}"
            )
        if dst == src:
            self._metrics.message("self")
            return proto.SendResp()  # self-addressed: dropped, as the protocol says
        if not caller.token.policy.allows(dst.group_id, dst.peer_id):
            self._metrics.message("denied")
            raise PermissionDeniedError(
                f"your token's allow policy {caller.token.policy} does not reach"
                f" {dst.group_id}/{dst.peer_id}"
            )
        if not self._send_limiter.allow(self._peer_key(caller)):
            self._metrics.message("rate_limited")
            raise ResourceExhaustedError(
                f"peer {src.group_id}/{src.peer_id} sends faster than"
                f" {self._config.send_rate:g} messages/s: slow down and retry"
            )
        target = await self._router.resolve(dst)
        self._check_live(caller)  # the last await before delivery is behind us
        if target is None or target.address == src:
            self._metrics.message("not_found")
            raise _no_stream(dst)
        if not target.policy.allows(src.group_id, src.peer_id):
            # Answered exactly as an absent peer: a refusal would tell the sender that a peer
            # who hides from it is online.
            self._metrics.message("denied")
            raise _no_stream(dst)
        payload = proto.RecvResp(msg=msg).SerializeToString()
        if not await self._router.deliver(target, payload):
            self._metrics.message("not_found")
            raise NotFoundError(f"peer {dst.group_id}/{dst.peer_id} has just gone away")
        self._metrics.message("delivered")
        self._recorder.message(caller.project_id)
        self._connection_log.delivered(src, target.address, kind)
        return proto.SendResp()

    def _own_address(self, caller: Caller, info: proto.PeerInfo, what: str) -> Address:
        """The caller's own connection address; refuses anyone else's ids or a reserved conn."""
        group_id, peer_id = info.group_id, info.peer_id
        if group_id != caller.token.group_id or peer_id != caller.token.peer_id:
            # The token's ids are valid, so only a mismatch needs checking: for the exact error.
            validate_id(group_id, f"{what}.group_id")
            validate_id(peer_id, f"{what}.peer_id")
            raise PermissionDeniedError(
                f"{what} is {group_id}/{peer_id} but the token is for"
                f" {caller.token.group_id}/{caller.token.peer_id}"
            )
        if info.conn_id <= MAX_RESERVED_CONN_ID:
            raise InvalidArgumentError(
                f"{what}.conn_id {info.conn_id} is reserved: pick a random uint32 above"
                f" {MAX_RESERVED_CONN_ID}"
            )
        return Address(caller.project_id, group_id, peer_id, info.conn_id)

    # -- Recv -----------------------------------------------------------------------------------

    async def open_stream(
        self,
        caller: Caller,
        request: proto.RecvReq,
        sink: StreamSink,
        *,
        client_timeout: float | None = None,
    ) -> Stream:
        """Register the caller's stream, announce it (``Join``) to the peers that may see it, and
        start it on ``sink``; the stream then runs on its own until it ends (expiry, rotation,
        revocation, ban, overflow, shutdown, or the transport closing it) and releases itself.

        ``client_timeout`` is the client's deadline (``grpc-timeout``): the stream ends with OK a
        little before it, and the SDK reopens it with the same conn_id.
        """
        if self._stopping:
            raise UnavailableError("server is shutting down; reconnect to another node")
        if not request.HasField("src"):
            raise InvalidArgumentError("RecvReq.src is required")
        address = self._own_address(caller, request.src, "src")
        self._check_live(caller)  # before any side effect (registering replaces a live stream)
        config = self._config
        who = f"peer {address.group_id}/{address.peer_id}"
        if not self._recv_limiter.allow(self._peer_key(caller)):
            raise ResourceExhaustedError(
                f"{who} opens Recv streams faster than {config.recv_rate:g}/s: slow down and retry"
            )
        replacing = self._hub.get(address) is not None
        if not replacing:
            counts = await self._router.stream_counts(*self._peer_key(caller))
            if counts.project >= config.max_streams_per_project:
                raise ResourceExhaustedError(
                    f"the project has {counts.project} open streams, its limit of"
                    f" {config.max_streams_per_project}: close some first"
                )
            if counts.peer >= config.max_streams_per_peer:
                raise ResourceExhaustedError(
                    f"{who} has {counts.peer} open streams, the limit per peer:"
                    " close one (or reopen an existing conn_id) first"
                )
        stream = Stream(
            address=address,
            key_id=caller.token.key_id,
            policy=caller.token.policy,
            expires_at=caller.token.expires_at + self._leeway,
            queue_limit=config.stream_queue,
        )
        try:
            await self._router.register(stream)
            # Registering may await (Redis): the key or a ban may have changed meanwhile.
            self._check_live(caller)
            self._metrics.streams.set(len(self._hub))
            self._recorder.stream_opened(
                caller.project_id,
                address.group_id,
                address.peer_id,
                self._hub.count(caller.project_id),
            )
            logger.info(
                "stream opened %s",
                address,
                extra={**caller.log_fields(), "conn": address.conn_id, "replaced": replacing},
            )
            if not replacing:
                await self._announce(stream)
        except BaseException:
            # Nobody will run this stream: leaving it registered would keep a ghost that
            # counts toward the caps and that other nodes still see.
            await self._router.unregister(stream)
            self._metrics.streams.set(len(self._hub))
            raise
        max_age = config.stream_max_age_secs
        if client_timeout is not None:
            max_age = min(max_age, max(1.0, client_timeout * 0.95))
        times = StreamTimes(
            ping_interval=config.ping_interval_secs,
            expires_in=stream.expires_at - time.time(),
            max_age=max_age,
        )
        stream.start(sink, times, clock=self._clock, ping=PING_BYTES, on_end=self._ended)
        return stream

    async def _announce(self, stream: Stream) -> None:
        """Best effort: a peer that misses this ``Join`` still finds the stream by its own."""
        me = stream.address
        try:
            others = await self._router.group(me.project_id, me.group_id)
        except Exception:
            logger.warning("Join of %s not broadcast: group lookup failed", me, exc_info=True)
            return
        for other in others:
            them = other.address
            if them.peer_id == me.peer_id:
                continue
            if not (
                stream.policy.allows(them.group_id, them.peer_id)
                and other.policy.allows(me.group_id, me.peer_id)
            ):
                continue
            join = proto.Message(
                header=proto.MessageHeader(src=_peer_info(me), dst=_peer_info(them)),
                payload=proto.MessagePayload(join=proto.Join()),
            )
            await self._deliver_quietly(other, proto.RecvResp(msg=join).SerializeToString())

    async def _deliver_quietly(self, target: Presence, payload: bytes) -> None:
        try:
            await self._router.deliver(target, payload)
        except Exception:
            logger.warning("Join to %s not delivered", target.address, exc_info=True)

    def _ended(self, stream: Stream) -> None:
        """A started stream ended: unregister it (which may await the router) in the background."""
        task = asyncio.get_running_loop().create_task(self._release(stream))
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)

    async def released(self) -> None:
        """Wait until every ended stream is unregistered (before the router closes)."""
        while self._releasing:
            await asyncio.gather(*self._releasing, return_exceptions=True)

    async def _release(self, stream: Stream) -> None:
        """Unregister an ended stream and count how it ended (once per stream)."""
        await self._router.unregister(stream)
        self._metrics.streams.set(len(self._hub))
        closed = stream.closed
        code = closed.status.name if closed is not None else "CANCELLED"
        self._metrics.stream_closes.labels(code).inc()
        logger.info(
            "stream closed %s: %s",
            stream.address,
            code,
            extra={
                "project": stream.address.project_id,
                "group": stream.address.group_id,
                "peer": stream.address.peer_id,
                "conn": stream.address.conn_id,
            },
        )

    # -- AnalyticsReport ------------------------------------------------------------------------

    async def analytics_report(
        self, caller: Caller, request: proto.AnalyticsReportReq
    ) -> proto.AnalyticsReportResp:
        self._check_live(caller)
        token = caller.token
        if not self._analytics_limiter.allow(self._peer_key(caller)):
            raise ResourceExhaustedError(
                f"peer {token.group_id}/{token.peer_id} sends analytics reports faster than"
                f" {self._config.analytics_rate:g}/s: send fewer, larger batches"
            )
        check_reports(token, request.reports)  # all checked before anything is recorded
        record_reports(self._recorder, caller.project_id, token, request.reports)
        return proto.AnalyticsReportResp()

    # -- control events, shutdown ---------------------------------------------------------------

    async def handle_event(self, event: ControlEvent) -> None:
        """Act on a control event from any node: revoke a key's streams, apply or lift a ban."""
        if isinstance(event, KeyDeleted):
            self.revoke_key(event.kid)
        elif isinstance(event, BanAdded):
            self.apply_ban(event.ban())  # with its expiry: a temporary ban ends on every node
        elif isinstance(event, BanRemoved):
            self._bans.remove(event.project_id, event.ban_id)
            logger.info("ban %s lifted", event.ban_id, extra={"project": event.project_id})

    def revoke_key(self, kid: str) -> None:
        self._keys.remove(kid)
        closed = self._hub.close_where(
            lambda s: s.key_id == kid,
            GrpcStatus.UNAUTHENTICATED,
            f"key {kid} was deleted: tokens minted with it no longer work",
        )
        if self._on_key_deleted is not None:
            self._on_key_deleted(kid)
        logger.info("key %s revoked; %d stream(s) closed", kid, closed)

    def apply_ban(self, ban: BanInfo) -> None:
        self._bans.add(ban)
        if not ban.active_at(self._recorder.now()):
            return
        closed = self._hub.close_where(
            lambda s: (
                s.address.project_id == ban.project_id
                and ban.matches(s.address.group_id, s.address.peer_id)
            ),
            GrpcStatus.PERMISSION_DENIED,
            "you are banned from this project",
        )
        logger.info(
            "ban %s applied; %d stream(s) closed", ban.id, closed, extra={"project": ban.project_id}
        )

    async def resync(self) -> None:
        """Reload keys and bans from the store: catches any event this node missed."""
        for kid in await self._keys.load():
            self.revoke_key(kid)
        await self._bans.load()
        for ban in list(self._bans.all()):
            self.apply_ban(ban)

    def shutdown(self) -> int:
        """End every stream with UNAVAILABLE (the SDK reconnects, to another node if any)."""
        self._stopping = True
        return self._hub.close_where(
            lambda s: True, GrpcStatus.UNAVAILABLE, "server is shutting down: reconnect"
        )
