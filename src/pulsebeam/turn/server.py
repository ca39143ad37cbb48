"""The STUN/TURN server: listeners on UDP, TCP and (optionally) TLS, built from ``[turn]`` settings.

::

    server = TurnServer(config.turn, secret, key_is_live=store_lookup, tls_context=ctx)
    await server.start()          # port 0 picks a free port; see .udp_address etc.
    server.revoke_key("kid_…")    # the key was deleted: its allocations end now
    usage = server.drain_usage()  # UsageDelta per project and day since the last drain
    await server.stop()

UDP and TCP share one port number (ICE URLs name one port for both). With ``enabled = False``
(``--no-turn``) :meth:`start` binds nothing: credentials may then point at an external TURN.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import ssl
from collections import Counter
from collections.abc import Callable

from prometheus_client import CollectorRegistry

from pulsebeam.config import TurnConfig
from pulsebeam.control.records import UsageDelta
from pulsebeam.errors import ConfigError
from pulsebeam.turn.attributes import Address
from pulsebeam.turn.auth import Authenticator, RateLimiter
from pulsebeam.turn.handler import RequestHandler
from pulsebeam.turn.manager import AllocationManager
from pulsebeam.turn.metrics import TurnMetrics
from pulsebeam.turn.peerfilter import PeerFilter
from pulsebeam.turn.transports import StreamConnection, UdpListener

__all__ = ["TurnServer"]

logger = logging.getLogger(__name__)

SWEEP_INTERVAL = 1.0
_SAME_PORT_ATTEMPTS = 20


def _relay_ip(config: TurnConfig) -> str:
    text = config.relay_ip or config.listen.host
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise ConfigError(f"setting --turn-relay-ip: {text!r} is not an IPv4 address") from None
    if ip.version != 4 or ip.is_unspecified:
        raise ConfigError(
            f"setting --turn-relay-ip: relays need one concrete IPv4 address, not {text!r}"
            " (set --turn-relay-ip when --turn listens on a wildcard or IPv6 address)"
        )
    return text


class TurnServer:
    """One STUN/TURN server; see the module docstring."""

    tcp_idle_timeout = 30.0  # seconds a TCP/TLS connection may stay open without an allocation
    # Open TCP/TLS connections per client IP: each holds a file descriptor, and without a cap
    # one host could exhaust them for every listener of the process (HTTP included).
    max_connections_per_ip = 256

    def __init__(
        self,
        config: TurnConfig,
        secret: bytes,
        *,
        key_is_live: Callable[[str], bool],
        tls_context: ssl.SSLContext | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        if not secret:
            raise ConfigError("setting --turn-secret: the TURN secret must not be empty")
        if config.auth_failure_rate <= 0:
            raise ConfigError("setting --turn-401-rate: must be a positive number")
        if not config.challenge_rate >= 0:  # also refuses NaN
            raise ConfigError("setting --turn-challenge-rate: must be 0 (no limit) or positive")
        if config.tls_listen is not None and tls_context is None and config.enabled:
            raise ConfigError("setting --turns needs a TLS certificate (--tls-cert and --tls-key)")
        self.config = config
        self._tls_context = tls_context
        self.metrics = TurnMetrics(registry)
        self.peer_filter = PeerFilter(
            allow=config.allow_peers, deny=config.deny_peers, allow_loopback=config.allow_loopback
        )
        self._relay_host = _relay_ip(config)
        self.manager = AllocationManager(
            relay_ip=self._relay_host,
            relay_ports=config.relay_ports,
            user_quota=config.user_quota,
            project_quota=config.project_quota,
            bandwidth_bps=config.bandwidth,
            metrics=self.metrics,
        )
        self._handler = RequestHandler(
            authenticator=Authenticator(
                secret, config.realm, key_is_live=key_is_live, nonce_ttl_secs=config.nonce_ttl_secs
            ),
            auth_limiter=RateLimiter(config.auth_failure_rate, 2 * config.auth_failure_rate),
            challenge_limiter=(
                RateLimiter(config.challenge_rate, 2 * config.challenge_rate)
                if config.challenge_rate > 0
                else None
            ),
            peer_filter=self.peer_filter,
            manager=self.manager,
            metrics=self.metrics,
            max_lifetime=config.max_lifetime_secs,
            max_session=config.max_session_secs,
        )
        self._udp: UdpListener | None = None
        self._tcp: asyncio.Server | None = None
        self._tls: asyncio.Server | None = None
        self._connections: set[StreamConnection] = set()
        self._per_ip: Counter[str] = Counter()
        self._sweeper: asyncio.Task[None] | None = None
        self.udp_address: Address | None = None
        self.tcp_address: Address | None = None
        self.tls_address: Address | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        if not self.config.enabled:
            logger.info("built-in TURN disabled (--no-turn)")
            return
        listen = self.config.listen
        for _ in range(_SAME_PORT_ATTEMPTS):
            udp = await self._bind_udp(listen.host, listen.port)
            try:
                self._tcp = await self._bind_stream(listen.host, udp.address[1], "tcp", None)
            except OSError:
                if listen.port != 0 or udp.transport is None:
                    raise
                udp.transport.close()  # port 0: the TCP twin of that UDP port is taken, retry
                continue
            self._udp = udp
            break
        else:
            raise OSError(f"no port free for both UDP and TCP on {listen.host}")
        self.udp_address = udp.address
        hosts = {self._relay_host, "127.0.0.1", listen.host}
        self._handler.own_addresses = frozenset((host, udp.address[1]) for host in hosts)
        self.tcp_address = self._sockname(self._tcp)
        if self.config.tls_listen is not None:
            tls = self.config.tls_listen
            self._tls = await self._bind_stream(tls.host, tls.port, "tls", self._tls_context)
            self.tls_address = self._sockname(self._tls)
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())
        logger.info(
            "TURN listening on udp %s, tcp %s, tls %s",
            self.udp_address,
            self.tcp_address,
            self.tls_address,
        )

    async def _bind_udp(self, host: str, port: int) -> UdpListener:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_datagram_endpoint(
            lambda: UdpListener(self._handler), local_addr=(host, port)
        )
        return protocol

    async def _bind_stream(
        self, host: str, port: int, kind: str, context: ssl.SSLContext | None
    ) -> asyncio.Server:
        loop = asyncio.get_running_loop()

        def factory() -> StreamConnection:
            return StreamConnection(
                self._handler,
                kind,
                self._connection_made,
                self._connection_lost,
                self.tcp_idle_timeout,
            )

        return await loop.create_server(
            factory,
            host,
            port,
            ssl=context,
            ssl_handshake_timeout=10.0 if context is not None else None,
            reuse_address=True,
        )

    @staticmethod
    def _sockname(server: asyncio.Server) -> Address:
        host, port = server.sockets[0].getsockname()[:2]
        return (host, port)

    def _connection_made(self, connection: StreamConnection) -> None:
        ip = connection.five_tuple[1][0]
        if self._per_ip[ip] >= self.max_connections_per_ip:
            logger.debug("refused a TCP/TLS connection from %s: too many open", ip)
            connection.close()
            return
        self._per_ip[ip] += 1
        self._connections.add(connection)

    def _connection_lost(self, connection: StreamConnection) -> None:
        if connection not in self._connections:
            return  # refused at connection_made
        self._connections.discard(connection)
        ip = connection.five_tuple[1][0]
        self._per_ip[ip] -= 1
        if self._per_ip[ip] <= 0:
            del self._per_ip[ip]
        if connection.allocation is not None:
            self.manager.remove(connection.allocation)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            try:
                self.manager.sweep()
            except Exception:  # a bug here must not stop expiry for good
                logger.exception("TURN sweep failed")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        await self._handler.cancel_pending()
        self.manager.close_all()
        for connection in list(self._connections):
            connection.close()
        for server in (self._tcp, self._tls):
            if server is not None:
                server.close()
                await server.wait_closed()
        if self._udp is not None and self._udp.transport is not None:
            self._udp.transport.close()
        self._udp = self._tcp = self._tls = None

    async def __aenter__(self) -> TurnServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- control --------------------------------------------------------------------------------
    def revoke_key(self, key_id: str) -> int:
        """Tear down every allocation whose credential names ``key_id``; returns how many."""
        return self.manager.revoke_key(key_id)

    def drain_usage(self) -> list[UsageDelta]:
        """TURN usage per project per UTC day since the last drain (relayed bytes, packets,
        allocations); the caller adds it to the store."""
        self.manager.sweep()
        return self.metrics.drain_usage()
