"""gRPC-Web over ASGI: the :class:`~.grpcweb.GrpcWebEndpoint` in front of the server's HTTP app.

Requests under ``/grpc/`` are answered here; everything else passes to the wrapped app. This
carries the signaling calls over HTTP/2 (hypercorn, under TLS) and the few HTTP/1.1 requests the
fast path of :mod:`.http1` leaves to ASGI (CORS preflights, pipelined requests).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from pulsebeam.errors import GrpcStatus, InvalidArgumentError
from pulsebeam.signaling.grpcweb import PREFIX, Answer, Call, GrpcWebEndpoint
from pulsebeam.signaling.grpcweb_frames import encode_message, encode_trailers
from pulsebeam.signaling.streams import Closed

__all__ = ["GrpcWebMiddleware"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class _BodyTooLarge(Exception):
    pass


class GrpcWebMiddleware:
    """ASGI: serve the signaling endpoint under ``/grpc/``, pass anything else to ``app``."""

    def __init__(self, app: ASGIApp, endpoint: GrpcWebEndpoint) -> None:
        self._app = app
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX):
            await self._app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        decision = self.endpoint.route(scope["method"], scope["path"], headers)
        del headers  # not needed for a stream's lifetime (memory per idle stream)
        if isinstance(decision, Answer):
            await _answer(send, decision)
            return
        call = decision
        try:
            body = await _read_body(receive, call.max_body)
        except _BodyTooLarge:
            await _answer(send, Answer(200, call.response_headers, self.endpoint.too_large(call)))
            return
        except InvalidArgumentError as exc:
            await _answer(
                send, Answer(200, call.response_headers, self.endpoint.failure(call, exc))
            )
            return
        if not call.streaming:
            await _answer(
                send, Answer(200, call.response_headers, await self.endpoint.unary(call, body))
            )
            return
        await self._recv(call, body, receive, send)

    async def _recv(self, call: Call, body: bytes, receive: Receive, send: Send) -> None:
        sink = _QueueSink()
        try:
            stream = await self.endpoint.open_recv(call, body, sink)
        except Exception as exc:
            await _answer(
                send, Answer(200, call.response_headers, self.endpoint.failure(call, exc))
            )
            return

        async def watch_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            stream.close(GrpcStatus.CANCELLED, "client went away")

        watcher = asyncio.create_task(watch_disconnect())
        try:
            await send(
                {"type": "http.response.start", "status": 200, "headers": call.response_headers}
            )
            while True:
                sink.opened = True
                stream.drain()
                item = await sink.next()
                if isinstance(item, Closed):
                    trailers = encode_trailers(item.status, item.message)
                    await send({"type": "http.response.body", "body": trailers, "more_body": False})
                    return
                frame = encode_message(item)
                await send({"type": "http.response.body", "body": frame, "more_body": True})
        except BaseException:  # the client went away mid-write, or the server task was cancelled
            stream.close(GrpcStatus.CANCELLED, "client went away")
            raise
        finally:
            watcher.cancel()


class _QueueSink:
    """Hands a stream's messages to the ASGI task that writes them, one at a time."""

    __slots__ = ("_items", "_waiter", "opened")

    def __init__(self) -> None:
        self._items: collections.deque[bytes | Closed] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self.opened = False  # until the response headers are out

    @property
    def ready(self) -> bool:
        return self.opened and not self._items

    def write(self, payload: bytes) -> None:
        self._put(payload)

    def end(self, closed: Closed) -> None:
        self._put(closed)

    def _put(self, item: bytes | Closed) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next(self) -> bytes | Closed:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.popleft()


async def _answer(send: Send, answer: Answer) -> None:
    headers = answer.headers
    if answer.status != 200 and answer.body:
        headers = [*headers, (b"content-length", str(len(answer.body)).encode())]
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body, "more_body": False})


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        event = await receive()
        if event["type"] == "http.disconnect":
            raise InvalidArgumentError("client went away before sending the request")
        chunk = event.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        chunks.append(chunk)
        more = event.get("more_body", False)
    return b"".join(chunks)
