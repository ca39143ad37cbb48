"""The composition root: builds every part of a PulseBeam node from one :class:`Config`.

``run(config)`` is what ``pulsebeam serve`` calls: it opens the control store, builds the
signaling service on the router the config picks (in-process, or Redis with ``--redis-url``),
serves HTTP (uvicorn on uvloop; under TLS hypercorn, which speaks HTTP/2 so browsers are not held
to six open ``Recv`` streams per origin) and stops cleanly on SIGINT/SIGTERM: open streams end
with UNAVAILABLE trailers first, so shutdown never waits on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import json
import logging
import os
import secrets
import signal
import socket
import ssl
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route

from pulsebeam.auth import TokenVerifier
from pulsebeam.config import Config
from pulsebeam.console import announce_first_run, create_console
from pulsebeam.control.api import create_api
from pulsebeam.control.api.app import error_response
from pulsebeam.control.store import Store
from pulsebeam.control.throttle import LoginThrottle
from pulsebeam.errors import ConfigError
from pulsebeam.signaling.directory import BanList, KeyDirectory
from pulsebeam.signaling.grpcweb import GrpcWebEndpoint
from pulsebeam.signaling.grpcweb_asgi import GrpcWebMiddleware
from pulsebeam.signaling.http1 import protocol_for
from pulsebeam.signaling.metrics import SignalingMetrics
from pulsebeam.signaling.records import Recorder
from pulsebeam.signaling.router import LocalRouter, Router
from pulsebeam.signaling.service import SignalingService
from pulsebeam.signaling.streams import Hub
from pulsebeam.turn.credentials import IceServer, IceServerProvider
from pulsebeam.turn.server import TurnServer
from pulsebeam.web import sdk_mount

__all__ = ["Node", "check_config", "run", "serve"]

logger = logging.getLogger(__name__)


def check_config(config: Config) -> None:
    """Refuse settings that cannot work or would be unsafe, before anything starts."""
    http = config.http
    if (http.tls_cert is None) != (http.tls_key is None):
        raise ConfigError("--tls-cert and --tls-key go together: give both or neither")
    if http.tls_cert is None and not http.listen.is_loopback and not http.insecure_http:
        raise ConfigError(
            f"refusing plain HTTP on non-loopback address {http.listen}: tokens and SDPs would"
            " travel in clear text. Give --tls-cert/--tls-key, put a TLS proxy in front and"
            " listen on 127.0.0.1, or force it with --insecure-http"
        )
    sig = config.signaling
    positive = {
        "ping-interval": sig.ping_interval_secs,
        "max-message-bytes": sig.max_message_bytes,
        "stream-max-age": sig.stream_max_age_secs,
        "stream-queue": sig.stream_queue,
        "send-rate": sig.send_rate,
        "send-burst": sig.send_burst,
        "max-project-streams": sig.max_streams_per_project,
        "max-streams-per-peer": sig.max_streams_per_peer,
        "recv-rate": sig.recv_rate,
        "recv-burst": sig.recv_burst,
        "analytics-rate": sig.analytics_rate,
        "analytics-burst": sig.analytics_burst,
        "presence-ttl": sig.presence_ttl_secs,
        "records-flush": sig.records_flush_secs,
        "key-resync": config.auth.key_resync_secs,
        "shutdown-timeout": http.shutdown_timeout_secs,
        "keep-alive": http.keep_alive_secs,
    }
    for flag, value in positive.items():
        if value <= 0:
            raise ConfigError(f"setting --{flag} must be positive, got {value}")
    if sig.stream_max_age_secs >= 900:
        raise ConfigError("setting --stream-max-age must be under 900 s (the SDK's deadline)")
    _check_tls_files(config)


class Node:
    """Every long-lived part of one server process, built from config; ``app`` is the ASGI app."""

    def __init__(self, config: Config, store: Store, router: Router, hub: Hub) -> None:
        self.config = config
        self.store = store
        self.router = router
        self.hub = hub
        self.metrics = SignalingMetrics()
        self.keys = KeyDirectory(store, miss_ttl_secs=config.auth.key_miss_cache_secs)
        self.bans = BanList(store)
        self.recorder = Recorder(store, self.metrics)
        self.service = SignalingService(
            config=config.signaling,
            verifier=TokenVerifier(self.keys.lookup, leeway_secs=config.auth.token_leeway_secs),
            keys=self.keys,
            bans=self.bans,
            router=router,
            hub=hub,
            recorder=self.recorder,
            metrics=self.metrics,
            ice_servers=self._ice_servers,
            token_leeway_secs=config.auth.token_leeway_secs,
            on_key_deleted=self._revoke_turn_key,
        )
        self.turn_secret = turn_secret(config)
        self.turn = TurnServer(
            config.turn,
            self.turn_secret,
            key_is_live=lambda kid: self.keys.lookup(kid) is not None,
            tls_context=_tls_context(config) if config.turn.tls_listen is not None else None,
            registry=self.metrics.registry,
        )
        self.ice: IceServerProvider | None = None
        self.endpoint = GrpcWebEndpoint(
            self.service,
            self.metrics,
            max_message_bytes=config.signaling.max_message_bytes,
            cors_origins=config.signaling.cors_origins,
            inline_calls=not router.suspends,
        )
        self.app = GrpcWebMiddleware(self._http_app(), self.endpoint)
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    async def open(cls, config: Config) -> Node:
        check_config(config)
        store = await Store.open(config.store)
        hub = Hub()
        try:
            router = await _make_router(config, hub)
        except BaseException:
            await store.close()
            raise
        return cls(config, store, router, hub)

    def _ice_servers(self, key_id: str, project_id: str, expires_at: int) -> Sequence[IceServer]:
        servers = [] if self.ice is None else self.ice.ice_servers(key_id, project_id, expires_at)
        return [*servers, *(IceServer((url,)) for url in self.config.signaling.ice_servers)]

    def _revoke_turn_key(self, kid: str) -> None:
        self.turn.revoke_key(kid)

    def _ice_provider(self) -> IceServerProvider | None:
        """STUN/TURN URLs with credentials: the built-in TURN's ports, or an external TURN."""
        turn = self.config.turn
        if turn.external is not None:
            host, port, tls_port = turn.external.host, turn.external.port, None
        elif self.turn.udp_address is not None:
            host, port = self.turn.udp_address
            tls_port = None if self.turn.tls_address is None else self.turn.tls_address[1]
        else:
            return None
        host = self.config.http.public_host or host
        with contextlib.suppress(ValueError):
            if ipaddress.ip_address(host).is_unspecified:
                raise ConfigError(
                    "TURN listens on a wildcard address: set --public-host to the name clients use"
                )
        return IceServerProvider(
            self.turn_secret,
            host=host,
            port=port,
            tls_port=tls_port,
            max_ttl_secs=turn.credential_ttl_secs,
        )

    def _http_app(self) -> Starlette:
        async def healthz(request: Request) -> Response:
            return JSONResponse(
                {"status": "ok", "node": self.router.node_id, "streams": len(self.hub)}
            )

        async def metrics(request: Request) -> Response:
            return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

        async def not_found(request: Request, exc: Exception) -> Response:
            # Paths no mount matches (including ones a mount's pattern cannot, such as an encoded
            # newline) answer in the API's JSON error shape rather than as plain text.
            return error_response(404, "not_found", "no such path on this server")

        async def home(request: Request) -> Response:
            return RedirectResponse("/console/")

        tls = self.config.http.tls_cert is not None
        throttle = LoginThrottle()  # one count of sign-in failures across API and console
        events = self.router.publish_event
        api = create_api(self.store, events, secure_cookies=tls, throttle=throttle)
        public = self.config.http.public_host
        self.console = create_console(
            self.store,
            events,
            secure_cookies=tls,
            throttle=throttle,
            public_url=None if public is None else f"https://{public}",
        )
        routes = [
            Route("/", home),
            Route("/healthz", healthz),
            Route("/metrics", metrics),
            Mount("/api/v1", api),
            Mount("/console", self.console),
            sdk_mount(),
        ]
        return Starlette(routes=routes, exception_handlers={404: not_found})

    async def start(self) -> None:
        await self.keys.load()
        await self.bans.load()
        await self.turn.start()
        self.ice = self._ice_provider()
        await self.router.start(self.service.handle_event)
        flush = self.config.signaling.records_flush_secs
        self._tasks = [
            asyncio.create_task(self.recorder.run(flush)),
            asyncio.create_task(self._resync_loop()),
            asyncio.create_task(self._turn_usage_loop(flush)),
        ]
        logger.info(
            "signaling node %s ready: %d keys, router %s",
            self.router.node_id,
            len(self.keys),
            type(self.router).__name__,
        )

    async def _resync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.auth.key_resync_secs)
            try:
                await self.service.resync()
            except Exception:
                logger.exception("reloading keys and bans failed; will retry")

    async def _turn_usage_loop(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self._write_turn_usage()

    async def _write_turn_usage(self) -> None:
        deltas = self.turn.drain_usage()
        if deltas:
            try:
                await self.store.record_usage(deltas)
            except Exception:
                logger.exception("writing TURN usage failed; %d record(s) lost", len(deltas))

    def stop_streams(self) -> None:
        closed = self.service.shutdown()
        if closed:
            logger.info("shutting down: %d open stream(s) ended with UNAVAILABLE", closed)

    async def close(self) -> None:
        self.stop_streams()
        await self.service.released()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.turn.stop()
        await self._write_turn_usage()
        await self.recorder.flush()
        await self.router.close()
        await self.store.close()


async def _make_router(config: Config, hub: Hub) -> Router:
    url = config.signaling.redis_url
    if url is None:
        return LocalRouter(hub, config.signaling.node_id)
    from pulsebeam.signaling.redis_router import RedisRouter

    return await RedisRouter.connect(
        url,
        hub,
        node_id=config.signaling.node_id,
        presence_ttl_secs=config.signaling.presence_ttl_secs,
    )


def turn_secret(config: Config) -> bytes:
    """``--turn-secret``, else one generated at first start and kept in the data dir (0600).

    Nodes sharing a PostgreSQL store need the same secret: give them ``--turn-secret``.
    """
    if config.turn.secret:
        return config.turn.secret.encode()
    path = config.store.data_dir / "turn-secret"
    for _ in range(2):
        try:
            text = path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            pass
        else:
            if text:
                return text.encode()
            raise ConfigError(f"TURN secret file {path} is empty: delete it or set --turn-secret")
        config.store.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue  # another node on this data dir wrote it first: read theirs
        with os.fdopen(fd, "w", encoding="ascii") as file:
            file.write(secrets.token_urlsafe(32) + "\n")
    return path.read_text(encoding="ascii").strip().encode()


def _tls_context(config: Config) -> ssl.SSLContext:
    http = config.http
    if http.tls_cert is None or http.tls_key is None:
        raise ConfigError("setting --turns needs a TLS certificate (--tls-cert and --tls-key)")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(http.tls_cert, http.tls_key)
    return context


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def _write_ready_file(path: Path, info: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(info), encoding="utf-8")
    tmp.replace(path)


async def serve(
    config: Config,
    *,
    stop: asyncio.Event,
    ready_file: Path | None = None,
    on_ready: Callable[[str, str | None], None] | None = None,
) -> None:
    """Run a node until ``stop`` is set; report the bound URL to the log, ``ready_file`` (JSON)
    and ``on_ready(url, first_run_setup_link_or_None)``."""
    node = await Node.open(config)
    try:
        http = config.http
        sock = _bind(http.listen.host, http.listen.port)
        try:
            await node.start()
            # Everything made so far (modules, app, caches) lives as long as the process: keep
            # it out of the garbage collector's scans, which would otherwise walk it again on
            # every full collection (measured: a Recv open with a new token 322 -> 245 µs).
            gc.freeze()
            scheme = "https" if http.tls_cert is not None else "http"
            host = f"[{http.listen.host}]" if ":" in http.listen.host else http.listen.host
            url = f"{scheme}://{host}:{sock.getsockname()[1]}"
            serving = _serve_hypercorn if http.tls_cert is not None else _serve_uvicorn
            task = asyncio.create_task(serving(node, sock, stop))
            logger.info("listening on %s (signaling at %s/grpc)", url, url)
            if ready_file is not None:
                turn = node.turn.udp_address
                info = {
                    "http": url,
                    "node": node.router.node_id,
                    "pid": os.getpid(),
                    "turn": None if turn is None else f"{turn[0]}:{turn[1]}",
                }
                _write_ready_file(ready_file, info)
            if on_ready is not None:
                on_ready(url, await announce_first_run(node.console, f"{url}/console"))
            await task
        finally:
            sock.close()
    finally:
        await node.close()


async def _serve_uvicorn(node: Node, sock: socket.socket, stop: asyncio.Event) -> None:
    config = uvicorn.Config(
        node.app,
        http=protocol_for(node.endpoint),
        lifespan="off",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(node.config.http.shutdown_timeout_secs) or 1,
        timeout_keep_alive=node.config.http.keep_alive_secs,  # type: ignore[arg-type]
        server_header=False,
        # The client address feeds per-address sign-in throttling: never let a caller choose it
        # with X-Forwarded-For (uvicorn trusts it from loopback by default).
        proxy_headers=False,
    )
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)
    await server.startup(sockets=[sock])
    await stop.wait()
    node.stop_streams()
    await server.shutdown(sockets=[sock])


async def _serve_hypercorn(node: Node, sock: socket.socket, stop: asyncio.Event) -> None:
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config as HypercornConfig

    http = node.config.http
    config = HypercornConfig()
    config.bind = [f"fd://{sock.detach()}"]  # hypercorn adopts (and closes) the descriptor
    config.certfile = str(http.tls_cert)
    config.keyfile = str(http.tls_key)
    config.alpn_protocols = ["h2", "http/1.1"]
    config.graceful_timeout = http.shutdown_timeout_secs
    config.keep_alive_timeout = http.keep_alive_secs
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")

    async def shutdown_trigger() -> None:
        await stop.wait()
        node.stop_streams()

    await hypercorn_serve(node.app, config, shutdown_trigger=shutdown_trigger)  # type: ignore[arg-type]


def _check_tls_files(config: Config) -> None:
    """Load the certificate once up front, so a bad file is a clear error, not a crash later."""
    http = config.http
    if http.tls_cert is None or http.tls_key is None:
        return
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(http.tls_cert, http.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot use --tls-cert/--tls-key: {exc}") from None


def run(
    config: Config,
    *,
    ready_file: Path | None = None,
    on_ready: Callable[[str, str | None], None] | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM, on uvloop."""
    check_config(config)
    import uvloop

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(config, stop=stop, ready_file=ready_file, on_ready=on_ready)

    with (
        asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
        contextlib.suppress(KeyboardInterrupt),
    ):
        runner.run(main())
