"""A lean HTTP/1.1 client for the signaling calls: h11 over asyncio streams, with keep-alive.

Why not httpx: measured on loopback (bench/RESULTS.md, "Peer connection setup"), an httpx
request cost ~0.7-1 ms of client CPU against ~0.1 ms for the server to answer ``Prepare``, and
connection setup is a chain of such calls. h11 (the sans-I/O HTTP/1.1 library under httpx and
uvicorn) does the protocol; this module only moves bytes: one pool of idle keep-alive
connections (a streaming response takes one too, and closes it at its end). No proxies, no
redirects, no cookies (none are wanted: tokens and SDPs go to the signaling server only).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass

import h11

__all__ = ["Http1Client", "HttpResponse", "HttpStream", "TransportError"]

_READ_SIZE = 65536
_MAX_IDLE = 8  # idle keep-alive connections kept per client


class TransportError(Exception):
    """The server could not be reached or broke the HTTP exchange."""


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    headers: dict[str, str]  # names lower-cased; a repeated name keeps its last value
    body: bytes = b""


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.http = h11.Connection(h11.CLIENT)
        self.received_any = False

    @property
    def reusable(self) -> bool:
        return (
            self.http.our_state is h11.DONE
            and self.http.their_state is h11.DONE
            and not self.writer.is_closing()
        )

    def send(self, target: str, headers: list[tuple[str, str]], body: bytes) -> None:
        self.received_any = False  # of this exchange's response
        # Head and body in one write: one segment on the wire for a small request.
        self.writer.write(
            self.http.send(h11.Request(method="POST", target=target, headers=headers))
            + self.http.send(h11.Data(data=body))
            + self.http.send(h11.EndOfMessage())
        )

    async def next_event(self) -> h11.Event:
        while True:
            event = self.http.next_event()
            if isinstance(event, h11.Event):
                return event
            if event is h11.PAUSED:  # only after a complete exchange; never read past one
                raise TransportError("the server sent more than one response")
            data = await self.reader.read(_READ_SIZE)
            if data:
                self.received_any = True
            self.http.receive_data(data)  # b"" means end of stream: h11 decides if that is ok

    async def response_head(self) -> HttpResponse:
        event = await self.next_event()
        while isinstance(event, h11.InformationalResponse):
            event = await self.next_event()
        if not isinstance(event, h11.Response):
            raise TransportError(f"unexpected HTTP event {type(event).__name__}")
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in event.headers}
        return HttpResponse(event.status_code, headers)

    async def body_chunks(self) -> AsyncIterator[bytes]:
        while True:
            event = await self.next_event()
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return
            else:
                raise TransportError(f"unexpected HTTP event {type(event).__name__}")

    def close(self) -> None:
        self.writer.close()


class HttpStream:
    """A streaming response on its own connection: ``status``/``headers``, then ``chunks``."""

    def __init__(self, connection: _Connection, head: HttpResponse) -> None:
        self._connection = connection
        self.status = head.status
        self.headers = head.headers

    async def chunks(self, idle_timeout: float) -> AsyncIterator[bytes]:
        """Body chunks as they arrive; raises TransportError if none comes for ``idle_timeout``."""
        iterator = aiter(self._connection.body_chunks())
        while True:
            try:
                async with asyncio.timeout(idle_timeout):
                    chunk = await anext(iterator)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise TransportError(f"no data for {idle_timeout:g} s") from None
            except (OSError, h11.ProtocolError) as exc:
                raise _transport_error(exc) from exc
            yield chunk

    async def read(self) -> bytes:
        try:
            return b"".join([chunk async for chunk in self._connection.body_chunks()])
        except (OSError, h11.ProtocolError) as exc:
            raise _transport_error(exc) from exc


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
        except (OSError, h11.ProtocolError, TransportError) as exc:
            self._discard(connection)
            raise _transport_error(exc) from exc
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
        fields = self._headers(headers, body)
        while True:
            connection, reused = await self._acquire()
            try:
                connection.send(self.path_prefix + path, fields, body)
                return connection, await connection.response_head()
            except (OSError, h11.ProtocolError, TransportError) as exc:
                self._discard(connection)
                if reused and not connection.received_any:
                    continue
                raise _transport_error(exc) from exc
            except BaseException:
                self._discard(connection)
                raise

    async def _acquire(self) -> tuple[_Connection, bool]:
        while self._idle:
            connection = self._idle.pop()
            if not connection.writer.is_closing() and not connection.reader.at_eof():
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
            reader, writer = await asyncio.open_connection(
                self._host,
                self._port,
                ssl=_tls_context() if self._tls else None,
                server_hostname=self._host if self._tls else None,
            )
        except (OSError, ssl.SSLError) as exc:
            raise _transport_error(exc) from exc
        return _Connection(reader, writer)

    def _release(self, connection: _Connection) -> None:
        self._busy.discard(connection)
        if connection.reusable and not self._closed and len(self._idle) < _MAX_IDLE:
            connection.http.start_next_cycle()
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
