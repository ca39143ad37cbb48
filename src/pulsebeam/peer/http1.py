"""A lean HTTP/1.1 client for the signaling calls: an asyncio protocol with keep-alive.

Why not httpx: measured on loopback (bench/RESULTS.md, "Peer connection setup"), an httpx
request cost ~0.7-1 ms of client CPU against ~0.1 ms for the server to answer ``Prepare``, and
connection setup is a chain of such calls. Responses are parsed by httptools (llhttp, the
parser under uvicorn), which costs ~2 µs where h11 cost ~45 µs per exchange; a request is one
``POST`` with a few headers, written whole in one ``write``. This module moves the bytes: one
pool of idle keep-alive connections (a streaming response takes one too, and closes it at its
end). No proxies, no redirects, no cookies (none are wanted: tokens and SDPs go to the
signaling server only).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import ssl
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httptools

__all__ = ["Http1Client", "HttpResponse", "HttpStream", "TransportError"]

_MAX_IDLE = 8  # idle keep-alive connections kept per client
# A response body buffered beyond this pauses reading until the consumer catches up.
_MAX_BUFFERED = 1 << 20
_MAX_HEAD = 64 * 1024  # a response head beyond this is refused (ours are a few hundred bytes)


class TransportError(Exception):
    """The server could not be reached or broke the HTTP exchange."""


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    headers: dict[str, str]  # names lower-cased; a repeated name keeps its last value
    body: bytes = b""


class _Connection(asyncio.Protocol):
    """One connection, one exchange at a time: ``send``, ``response_head``, ``body_chunks``."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._lost: TransportError | None = None
        self._parser: httptools.HttpResponseParser | None = None
        self._status = 0
        self._headers: dict[str, str] = {}
        self._response: HttpResponse | None = None  # the head, once it has arrived
        self._head_bytes = 0  # of the header lines parsed
        self._unparsed_head = 0  # bytes received while the head has not ended
        self._refusal: TransportError | None = None  # why a callback stopped the parser
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._wake: asyncio.Future[None] | None = None
        self._complete = False
        self._keep_alive = False
        self._stray = False  # bytes after the response: the connection cannot be trusted
        self.received_any = False  # of this exchange's response
        # An idle watch (HttpStream.chunks): the time of the last byte, and the check when due.
        self._last_data_at = 0.0
        self._idle_check: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------ the pool's view

    @property
    def alive(self) -> bool:
        transport = self._transport
        return self._lost is None and transport is not None and not transport.is_closing()

    @property
    def reusable(self) -> bool:
        return self.alive and self._complete and self._keep_alive and not self._stray

    def send(self, request: bytes) -> None:
        """Write a whole request (see :func:`_encode_request`) and expect its response."""
        if self._lost is not None or self._transport is None:
            raise self._lost or TransportError("not connected")
        self._parser = httptools.HttpResponseParser(self)
        self._status, self._headers, self._response = 0, {}, None
        self._head_bytes = self._unparsed_head = 0
        self._refusal = None
        self._chunks.clear()
        self._buffered = 0
        self._complete = self._keep_alive = self.received_any = False
        self._transport.write(request)

    async def response_head(self) -> HttpResponse:
        while self._response is None:
            if self._lost is not None:
                raise self._lost
            await self._next_event()
        return self._response

    async def body_chunks(self) -> AsyncIterator[bytes]:
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                if self._buffered < _MAX_BUFFERED // 2 and self._transport is not None:
                    self._transport.resume_reading()  # a no-op unless paused
                yield chunk
            elif self._complete:
                return
            elif self._lost is not None:
                raise self._lost
            else:
                await self._next_event()

    def close(self) -> None:
        self.unwatch_idle()
        if self._transport is not None:
            self._transport.close()

    def watch_idle(self, timeout: float) -> None:
        """Fail the exchange when no byte has come for ``timeout`` s. Checked when due, not per
        chunk: a timeout per chunk cost a timer and a context (~5 µs) per streamed message."""
        loop = asyncio.get_running_loop()
        self._last_data_at = loop.time()
        self.unwatch_idle()
        self._idle_check = loop.call_later(timeout, self._check_idle, timeout)

    def unwatch_idle(self) -> None:
        if self._idle_check is not None:
            self._idle_check.cancel()
            self._idle_check = None

    def _check_idle(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        quiet = loop.time() - self._last_data_at
        if quiet < timeout:
            self._idle_check = loop.call_later(timeout - quiet, self._check_idle, timeout)
            return
        self._idle_check = None
        self._fail(TransportError(f"no data for {timeout:g} s"))
        self.close()

    # ------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        if self._idle_check is not None:
            self._last_data_at = asyncio.get_running_loop().time()
        if self._parser is None or self._complete:
            self._stray = True  # never asked for: no pipelining here
            self.close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if not self._stray:  # (a second response after a complete one only taints)
                self._fail(self._refusal or TransportError(f"malformed HTTP response: {exc}"))
            self.close()
            return
        if self._response is None and not self._complete:
            # A head that does not end (one endless header line) reaches no callback.
            self._unparsed_head += len(data)
            if self._unparsed_head > _MAX_HEAD:
                self._fail(TransportError(f"the response head is over {_MAX_HEAD} bytes"))
                self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.unwatch_idle()
        if exc is None and self._response is not None and self._ends_with_connection():
            self._complete = True  # a clean end of the connection was the end of the body
        detail = str(exc) if exc is not None and str(exc) else "the server closed the connection"
        self._fail(TransportError(detail))

    # ------------------------------------------------------------ httptools callbacks

    def on_message_begin(self) -> None:
        if self._complete:
            self._stray = True
            raise TransportError("the server sent more than one response")  # stops the parser

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value)
        if self._head_bytes > _MAX_HEAD:
            self._refusal = TransportError(f"the response head is over {_MAX_HEAD} bytes")
            raise self._refusal  # stops the parser
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        self._status = self._parser.get_status_code()
        if self._status >= 200:
            self._response = HttpResponse(self._status, self._headers)
            self._wake_reader()

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > _MAX_BUFFERED and self._transport is not None:
            self._transport.pause_reading()
        self._wake_reader()

    def on_message_complete(self) -> None:
        assert self._parser is not None
        if self._status < 200:  # an informational response (100 Continue): the real one follows
            self._headers = {}
            return
        self._complete = True
        self._keep_alive = self._parser.should_keep_alive()
        self._wake_reader()

    # ------------------------------------------------------------ internals

    def _ends_with_connection(self) -> bool:
        """A response whose body runs until the connection closes (no length, not chunked)."""
        framing = self._headers.get("transfer-encoding", "").lower()
        return (
            not self._complete
            and "content-length" not in self._headers
            and "chunked" not in framing
            and self._status not in (204, 304)
        )

    async def _next_event(self) -> None:
        self._wake = asyncio.get_running_loop().create_future()
        await self._wake

    def _fail(self, error: TransportError) -> None:
        if self._lost is None:
            self._lost = error
        self._wake_reader()

    def _wake_reader(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)


def _printable(text: str) -> bool:
    return text.isascii() and text.isprintable()


def _encode_request(target: str, headers: list[tuple[str, str]], body: bytes) -> bytes:
    """``POST target`` with ``headers`` and ``body``, head and body in one piece (one segment on
    the wire for a small request). Raises ValueError for what would break the framing."""
    lines = [f"POST {target.replace(' ', '%20')} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in headers]
    for line in lines:
        if not _printable(line):
            raise ValueError(f"refusing to send a non-printable request line: {line[:60]!r}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body


class HttpStream:
    """A streaming response on its own connection: ``status``/``headers``, then ``chunks``."""

    def __init__(self, connection: _Connection, head: HttpResponse) -> None:
        self._connection = connection
        self.status = head.status
        self.headers = head.headers

    async def chunks(self, idle_timeout: float) -> AsyncIterator[bytes]:
        """Body chunks as they arrive; raises TransportError if none comes for ``idle_timeout``."""
        self._connection.watch_idle(idle_timeout)
        try:
            async for chunk in self._connection.body_chunks():
                yield chunk
        finally:
            self._connection.unwatch_idle()

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self._connection.body_chunks()])


class Http1Client:
    """POSTs to one origin (``http://`` or ``https://``); TLS verifies with the system CAs."""

    def __init__(self, base_url: str) -> None:
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base URL must be http:// or https:// with a host, got {base_url!r}")
        self._tls = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._tls else 80)
        self._authority = parts.netloc.rpartition("@")[2]
        self.path_prefix = parts.path.rstrip("/")
        for part in (self._authority, self.path_prefix):
            if not _printable(part) or " " in part:
                raise ValueError(f"base URL must be printable ASCII without spaces: {base_url!r}")
        self._idle: list[_Connection] = []
        self._busy: set[_Connection] = set()
        self._warming: asyncio.Task[None] | None = None
        self._closed = False

    async def aclose(self) -> None:
        self._closed = True
        if self._warming is not None:
            self._warming.cancel()
        for connection in [*self._idle, *self._busy]:
            connection.close()
        self._idle.clear()
        self._busy.clear()

    def _headers(self, headers: dict[str, str], body: bytes) -> list[tuple[str, str]]:
        return [("host", self._authority), *headers.items(), ("content-length", str(len(body)))]

    def preconnect(self) -> None:
        """Open one connection in the background for a later call (errors surface then)."""
        if not self._closed:
            self._warming = asyncio.create_task(self._warm())

    async def _warm(self) -> None:
        with contextlib.suppress(TransportError):
            connection = await self._open()
            if self._closed or len(self._idle) >= _MAX_IDLE:
                connection.close()
            else:
                self._idle.append(connection)

    async def post(self, path: str, headers: dict[str, str], body: bytes) -> HttpResponse:
        """One request on a pooled connection; the caller bounds it with a timeout."""
        connection, head = await self._request(path, headers, body)
        try:
            content = b"".join([chunk async for chunk in connection.body_chunks()])
        except TransportError:
            self._discard(connection)
            raise
        except BaseException:
            self._discard(connection)  # cancelled mid-exchange: the connection is unusable
            raise
        self._release(connection)
        return HttpResponse(head.status, head.headers, content)

    @contextlib.asynccontextmanager
    async def stream(
        self, path: str, headers: dict[str, str], body: bytes, head_timeout: float
    ) -> AsyncIterator[HttpStream]:
        """A request whose response is read as it arrives; its connection is not reused."""
        try:
            async with asyncio.timeout(head_timeout):
                connection, head = await self._request(path, headers, body)
        except TimeoutError:
            raise TransportError(f"no response within {head_timeout:g} s") from None
        try:
            yield HttpStream(connection, head)
        finally:
            self._discard(connection)

    async def _request(
        self, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[_Connection, HttpResponse]:
        """Send a request and read its response head, on a pooled connection if one is idle.

        A pooled connection the server closed while idle fails before any response byte: the
        request is then sent once more on a new connection (harmless for signaling: Prepare and
        Recv are idempotent and the peer de-duplicates a repeated Send by its seqnum).
        """
        request = _encode_request(self.path_prefix + path, self._headers(headers, body), body)
        while True:
            connection, reused = await self._acquire()
            try:
                connection.send(request)
                return connection, await connection.response_head()
            except TransportError:
                self._discard(connection)
                if reused and not connection.received_any:
                    continue
                raise
            except BaseException:
                self._discard(connection)
                raise

    async def _acquire(self) -> tuple[_Connection, bool]:
        while self._idle:
            connection = self._idle.pop()
            if connection.alive:
                self._busy.add(connection)
                return connection, True
            connection.close()
        connection = await self._open()
        self._busy.add(connection)
        return connection, False

    async def _open(self) -> _Connection:
        if self._closed:
            raise TransportError("the client is closed")
        try:
            _, connection = await asyncio.get_running_loop().create_connection(
                _Connection,
                self._host,
                self._port,
                ssl=_tls_context() if self._tls else None,
                server_hostname=self._host if self._tls else None,
            )
        except (OSError, ssl.SSLError) as exc:
            raise _transport_error(exc) from exc
        return connection

    def _release(self, connection: _Connection) -> None:
        self._busy.discard(connection)
        if connection.reusable and not self._closed and len(self._idle) < _MAX_IDLE:
            self._idle.append(connection)
        else:
            connection.close()

    def _discard(self, connection: _Connection) -> None:
        self._busy.discard(connection)
        connection.close()


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # Building one loads the CA bundle (~50 ms): once per process, not once per peer.
    return ssl.create_default_context()


def _transport_error(exc: BaseException) -> TransportError:
    if isinstance(exc, TransportError):
        return exc
    detail = str(exc) or type(exc).__name__
    return TransportError(detail)
