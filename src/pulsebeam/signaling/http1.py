"""The HTTP/1.1 protocol of plain-HTTP deployments: uvicorn's (httptools), with gRPC-Web calls
answered at the protocol level.

Why: every relayed signaling message is one ``Send`` request plus one frame on the receiver's
``Recv`` response. Through ASGI each request costs a scope, a request-response cycle, an app task
and a handful of message dicts, and each open ``Recv`` holds a task, a disconnect watcher and a
queue: most of the server's CPU per message and of its memory per idle stream. Here a
``POST /grpc/…`` on an idle connection skips all of that: the request's few headers go to the
:class:`~.grpcweb.GrpcWebEndpoint`, a unary answer is written in one piece, and a ``Recv``
stream writes its frames straight to the socket as chunks (:class:`_ChunkedSink`). Everything
else (the REST API, the console, CORS preflights, HTTP/1.0, a request pipelined behind another)
takes uvicorn's ASGI path unchanged. No ASGI server offers a hook for this, hence the subclass;
uvicorn's version is pinned to the range this was written against (pyproject.toml).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, ClassVar, cast

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.protocols.utils import get_local_addr, get_remote_addr, is_ssl

from pulsebeam.errors import GrpcStatus
from pulsebeam.signaling.grpcweb import PREFIX, Answer, Call, GrpcWebEndpoint, Headers
from pulsebeam.signaling.grpcweb_frames import encode_message, encode_trailers
from pulsebeam.signaling.http1_parts import CoalescingTransport, LightFlowControl, Pipeline
from pulsebeam.signaling.streams import Closed, Stream

__all__ = ["GrpcWebHttpProtocol", "protocol_for"]

_PREFIX = PREFIX.encode()
# The only request headers the endpoint reads (every other one is skipped, not decoded).
_WANTED = frozenset((b"authorization", b"content-type", b"origin", b"grpc-timeout"))
_CHUNKED = b"transfer-encoding: chunked\r\n"
_CLOSE = b"connection: close\r\n"
_LAST_CHUNK = b"0\r\n\r\n"
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_MAX_PIPELINED = 16  # requests queued behind one in flight; browsers never pipeline at all
_LINGER_SECS = 2.0  # how long a connection refused mid-body may go on sending before it closes


class _Exchange:
    """Stands in for uvicorn's request-response cycle while a fast-path call is in flight, so
    that uvicorn queues a request pipelined behind it and its shutdown waits for it."""

    __slots__ = ("keep_alive", "response_complete")

    def __init__(self, keep_alive: bool) -> None:
        self.keep_alive = keep_alive
        self.response_complete = False


class _FastState:
    """A connection's fast-path state, in one attribute: uvicorn's protocol already sets 28
    instance attributes, and past 30 CPython gives up the compact shared-key ``__dict__``
    (about 1.5 KiB more per connection)."""

    __slots__ = (
        "body",
        "call",
        "draining",
        "idle_since",
        "keep_alive",
        "route_key",
        "route_value",
        "stream",
    )

    def __init__(self) -> None:
        self.call: Answer | Call | None = None  # the request being read, if on the fast path
        self.keep_alive = True
        self.body = bytearray()
        self.stream: Stream | None = None  # this connection's open Recv, if any
        # The previous request's routing: clients repeat the same path and headers.
        self.route_key: tuple[bytes | None, ...] | None = None
        self.route_value: Answer | Call | None = None
        self.idle_since: float | None = None  # loop time of the last answer, while idle
        self.draining = False  # answered and closing: whatever else comes is dropped


class _ChunkedSink:
    """A ``Recv`` response: frames as HTTP/1.1 chunks, straight to the connection's socket."""

    __slots__ = ("_exchange", "_headers", "_protocol", "opened")

    def __init__(
        self, protocol: GrpcWebHttpProtocol, exchange: _Exchange, headers: Headers
    ) -> None:
        self._protocol = protocol
        self._exchange = exchange
        self._headers = headers
        self.opened = False

    @property
    def ready(self) -> bool:
        protocol = self._protocol
        return (
            self.opened and not protocol.flow.write_paused and not protocol.transport.is_closing()
        )

    def open(self) -> None:
        """Send the response headers; the stream's frames may follow."""
        if not self.opened:
            self.opened = True
            self._protocol.write_head(200, self._headers, _CHUNKED, self._exchange)

    def write(self, payload: bytes) -> None:
        frame = encode_message(payload)
        self._protocol.wire.write_now(b"%x\r\n%b\r\n" % (len(frame), frame))

    def end(self, closed: Closed) -> None:
        protocol = self._protocol
        protocol.fast.stream = None
        if protocol.transport.is_closing():
            self._exchange.response_complete = True
            return
        self.open()
        trailers = encode_trailers(closed.status, closed.message)
        protocol.wire.write_now(b"%x\r\n%b\r\n%b" % (len(trailers), trailers, _LAST_CHUNK))
        protocol.complete(self._exchange)


class GrpcWebHttpProtocol(HttpToolsProtocol):
    """Bound to an endpoint by :func:`protocol_for`, for ``uvicorn.Config(http=…)``."""

    endpoint: ClassVar[GrpcWebEndpoint]

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # uvicorn's connection_made, less what only an ASGI request needs: the socket addresses
        # (looked up when the first such request comes; about 0.5 KiB per connection) and a
        # flow control with an event per connection.
        self.connections.add(self)
        self.transport = cast(asyncio.Transport, CoalescingTransport(transport, self.loop))
        self.flow = LightFlowControl(self.transport)
        self.scheme = "https" if is_ssl(transport) else "http"
        self.pipeline = cast(Any, Pipeline())
        self.fast = _FastState()

    @property
    def wire(self) -> CoalescingTransport:
        return cast(CoalescingTransport, self.transport)

    # -- parser callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        # uvicorn builds the request's ASGI scope here; the fast path never needs it, so it is
        # built in on_headers_complete, once the request turns out to take the ASGI path.
        self.url = b""
        self.expect_100_continue = False
        self.headers = []
        self.fast.idle_since = None  # busy: also for a request later in the same read

    def on_headers_complete(self) -> None:
        if self.fast.draining:
            return  # refused and closing: what else the client pipelined is dropped
        if not self._takes_fast_path():
            if len(self.pipeline) >= _MAX_PIPELINED:
                # uvicorn queues every request of a read behind one in flight, each with its
                # scope and cycle (tens of MiB from one 256 KiB read): no client needs this.
                self.fast.draining = True
                self.transport.close()
                return
            if self.client is None:
                self.server = get_local_addr(self.transport)
                self.client = get_remote_addr(self.transport)
            url, headers, expect = self.url, self.headers, self.expect_100_continue
            super().on_message_begin()
            self.url, self.expect_100_continue = url, expect
            self.headers = self.scope["headers"] = headers
            super().on_headers_complete()
            return
        fast = self.fast
        fast.keep_alive = self.parser.should_keep_alive()
        path = self.url.partition(b"?")[0]
        found = dict(self.headers)
        key = (
            path,
            found.get(b"authorization"),
            found.get(b"content-type"),
            found.get(b"origin"),
            found.get(b"grpc-timeout"),
        )
        if key == fast.route_key:
            fast.call = fast.route_value
        else:
            wanted = {
                name.decode("latin-1"): value.decode("latin-1")
                for name, value in self.headers
                if name in _WANTED
            }
            fast.call = self.endpoint.route("POST", path.decode("ascii"), wanted)
            # Remembered for the next request, unless this one is a stream: a connection
            # carries one Recv for minutes, and the token need not stay in memory meanwhile.
            streaming = isinstance(fast.call, Call) and fast.call.streaming
            fast.route_key = None if streaming else key
            fast.route_value = None if streaming else fast.call
        fast.body = bytearray()
        self.headers = []  # not needed any more (memory of a long Recv)
        if self.expect_100_continue:
            self._answer_expect_continue(fast, found.get(b"content-length"))

    def _answer_expect_continue(self, fast: _FastState, length: bytes | None) -> None:
        """curl asks before sending a body over 1 KiB, then waits: invite the body, or refuse
        the request at once (the client then sends no body, so the connection closes)."""
        call = fast.call
        if isinstance(call, Call) and not (
            length and length.isdigit() and int(length) > call.max_body
        ):
            self.wire.write_now(_CONTINUE)
            return
        assert call is not None
        fast.call = None
        fast.draining = True
        exchange = self._begin(keep_alive=False)
        if isinstance(call, Answer):
            self.respond(exchange, call.status, call.headers, call.body)
        else:
            self.respond(exchange, 200, call.response_headers, self.endpoint.too_large(call))

    def _takes_fast_path(self) -> bool:
        parser = self.parser
        url = self.url
        return (
            url.startswith(_PREFIX)
            and parser.get_method() == b"POST"
            and parser.get_http_version() == "1.1"
            and (self.cycle is None or self.cycle.response_complete)
            and not parser.should_upgrade()
            and b"%" not in url
        )

    def on_body(self, body: bytes) -> None:
        fast = self.fast
        call = fast.call
        if call is None:
            if not fast.draining:
                super().on_body(body)
            return
        if not isinstance(call, Call):
            return  # answered without its body
        if len(fast.body) + len(body) > call.max_body:
            # Answer now rather than read an endless body, then close once the client has had
            # time to read the answer: closing a socket with unread bytes in it makes the kernel
            # reset the connection, and the reset would destroy the answer on its way.
            fast.call = None
            fast.body = bytearray()
            fast.draining = True
            exchange = self._begin(keep_alive=False)
            self.respond(exchange, 200, call.response_headers, self.endpoint.too_large(call))
            return
        # One growing buffer, as uvicorn keeps: a list of the parser's pieces would cost an
        # object per piece (a body sent two bytes at a time took 8x its size).
        fast.body += body

    def data_received(self, data: bytes) -> None:
        if not self.fast.draining:
            super().data_received(data)

    def on_message_complete(self) -> None:
        fast = self.fast
        call = fast.call
        if call is None:
            if not fast.draining:
                super().on_message_complete()
            return
        fast.call = None
        exchange = self._begin(keep_alive=fast.keep_alive)
        if isinstance(call, Answer):
            self.respond(exchange, call.status, call.headers, call.body)
            return
        body = bytes(fast.body)
        fast.body = bytearray()
        run = (
            self._recv(call, body, exchange)
            if call.streaming
            else self._unary(call, body, exchange)
        )
        if self.endpoint.inline_calls:
            # Run it here, as Python 3.12's eager tasks would: it answers before this callback
            # returns, and only a call that must wait gets a task, to finish in.
            try:
                waiting_on = run.send(None)
            except StopIteration:
                return
            self._start_task(_finish(run, waiting_on))
            return
        self._start_task(run)

    def _start_task(self, run: Coroutine[Any, Any, None]) -> None:
        task = self.loop.create_task(run)
        self.tasks.add(task)  # uvicorn's graceful shutdown waits for these
        task.add_done_callback(self.tasks.discard)

    # -- calls ------------------------------------------------------------------------------

    def _begin(self, *, keep_alive: bool) -> _Exchange:
        exchange = _Exchange(keep_alive)
        self.cycle = cast(Any, exchange)
        return exchange

    async def _unary(self, call: Call, body: bytes, exchange: _Exchange) -> None:
        answer = await self.endpoint.unary(call, body)
        self.respond(exchange, 200, call.response_headers, answer)

    async def _recv(self, call: Call, body: bytes, exchange: _Exchange) -> None:
        sink = _ChunkedSink(self, exchange, call.response_headers)
        try:
            stream = await self.endpoint.open_recv(call, body, sink)
        except Exception as exc:
            self.respond(exchange, 200, call.response_headers, self.endpoint.failure(call, exc))
            return
        if stream.closed is not None:
            return  # ended while it opened (revoked, replaced): the sink has answered
        if self.transport.is_closing():
            stream.close(GrpcStatus.CANCELLED, "client went away")
            return
        self.fast.stream = stream
        sink.open()
        stream.drain()

    # -- writing ----------------------------------------------------------------------------

    def write_head(self, status: int, headers: Headers, extra: bytes, exchange: _Exchange) -> None:
        self.wire.write_now(_head(status, headers, extra, exchange.keep_alive))

    def respond(self, exchange: _Exchange, status: int, headers: Headers, body: bytes) -> None:
        if self.transport.is_closing():
            exchange.response_complete = True
            return
        length = b"content-length: %d\r\n" % len(body)
        self.wire.write_now(_head(status, headers, length, exchange.keep_alive) + body)
        self.complete(exchange)

    def complete(self, exchange: _Exchange) -> None:
        exchange.response_complete = True
        if exchange.keep_alive:
            self.on_response_complete()  # uvicorn: next pipelined request, or keep-alive timer
        elif self.fast.draining:
            self.wire.write_eof()  # the answer, then EOF; what the client still sends is dropped
            self.loop.call_later(_LINGER_SECS, self.transport.close)
        else:
            self.transport.close()

    # -- keep-alive -------------------------------------------------------------------------
    # uvicorn arms a fresh keep-alive timer after every answer and cancels it at the next
    # request: two timer operations per signaling message. Here one timer per idle period
    # re-arms itself for the remainder instead; the rest of on_response_complete is uvicorn's.

    def on_response_complete(self) -> None:
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        if self.flow.write_paused:
            # The client does not read its answers: read no more of its requests until it does
            # (else answers written inline would pile up in the socket's buffer without bound).
            self.flow.pause_reading()
        else:
            self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self.fast.idle_since = self.loop.time()
        if self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

    def _unset_keepalive_if_required(self) -> None:
        self.fast.idle_since = None  # busy: an armed timer finds out when it fires

    def timeout_keep_alive_handler(self) -> None:
        self.timeout_keep_alive_task = None
        idle_since = self.fast.idle_since
        if idle_since is None:
            return  # busy; the next answer arms the timer again
        remaining = idle_since + self.timeout_keep_alive - self.loop.time()
        if remaining > 0:
            self.timeout_keep_alive_task = self.loop.call_later(
                remaining, self.timeout_keep_alive_handler
            )
        elif not self.transport.is_closing():
            self.transport.close()

    # -- connection events ------------------------------------------------------------------

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timeout_keep_alive_task is not None:  # (uvicorn's own cancel is overridden)
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None
        stream = self.fast.stream
        if stream is not None:
            self.fast.stream = None
            stream.close(GrpcStatus.CANCELLED, "client went away")
        if isinstance(self.cycle, _Exchange):
            self.cycle = cast(Any, None)
        super().connection_lost(exc)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.fast.stream is not None:
            self.fast.stream.drain()
        elif self.cycle is None or self.cycle.response_complete:
            self.flow.resume_reading()  # paused by on_response_complete while it was full

    def shutdown(self) -> None:
        if isinstance(self.cycle, _Exchange) and not self.cycle.response_complete:
            self.cycle.keep_alive = False  # close once the call in flight has answered
            return
        super().shutdown()


def _head(status: int, headers: Headers, extra: bytes, keep_alive: bool) -> bytes:
    parts = [STATUS_LINE[status]]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    parts.append(extra)
    if not keep_alive:
        parts.append(_CLOSE)
    parts.append(b"\r\n")
    return b"".join(parts)


async def _finish(run: Coroutine[Any, Any, None], waiting_on: object) -> None:
    """Drive to its end, inside a task, a coroutine that was started inline and suspended on
    ``waiting_on`` (what it yielded: a future, or None for a bare yield), as a task would."""
    while True:
        try:
            if isinstance(waiting_on, asyncio.Future):
                await asyncio.wait((waiting_on,))  # its result or error reaches ``run`` below
            else:
                await asyncio.sleep(0)
        except asyncio.CancelledError as cancelled:  # server shutdown: ``run`` sees it too
            try:
                waiting_on = run.throw(cancelled)
            except StopIteration:
                return
            continue
        try:
            waiting_on = run.send(None)
        except StopIteration:
            return


def protocol_for(endpoint: GrpcWebEndpoint) -> type[GrpcWebHttpProtocol]:
    """The protocol class, bound to ``endpoint``, for ``uvicorn.Config(http=…)``."""
    return type("BoundGrpcWebHttpProtocol", (GrpcWebHttpProtocol,), {"endpoint": endpoint})
