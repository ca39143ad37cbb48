"""gRPC-Web over HTTP for ``pulsebeam.v1.Signaling``: a small ASGI layer in front of the rest of
the server's HTTP app.

Requests under ``/grpc/pulsebeam.v1.Signaling/<Method>`` are handled here; everything else passes
to the wrapped app. Why by hand: the Python gRPC-Web options are proxies (Envoy) or WSGI-only
libraries; the binary framing is five bytes per frame, and what browsers need (PROTOCOL.md §3
"practicalities") is easiest to guarantee in one place:

- responses are HTTP 200 with content type exactly ``application/grpc-web+proto``;
- a unary answer is a data frame (zero-length for an empty message) and a trailers frame;
- errors go in a trailers frame of the 200 body (``grpc-status``, ``grpc-message``);
- CORS preflights allow ``authorization, content-type, grpc-timeout, x-grpc-web, x-user-agent``
  and responses expose ``grpc-status, grpc-message``;
- ``Recv`` writes one frame per message and ends with trailers; a disconnect ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError
from google.protobuf.message import Message as ProtoMessage

from pulsebeam import proto
from pulsebeam.errors import (
    GrpcStatus,
    InvalidArgumentError,
    PulseBeamError,
    ResourceExhaustedError,
)
from pulsebeam.signaling.grpcweb_frames import (
    FLAG_COMPRESSED,
    decode_frames,
    encode_message,
    encode_trailers,
)
from pulsebeam.signaling.metrics import SignalingMetrics
from pulsebeam.signaling.service import Caller, SignalingService

__all__ = ["CONTENT_TYPE", "GrpcWebMiddleware"]

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CONTENT_TYPE = "application/grpc-web+proto"
_ACCEPTED_TYPES = frozenset({"application/grpc-web", "application/grpc-web+proto"})
PREFIX = "/grpc/"
ALLOW_HEADERS = "authorization, content-type, grpc-timeout, x-grpc-web, x-user-agent"
EXPOSE_HEADERS = "grpc-status, grpc-message"
_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
# The gRPC spec: 1 to 8 ASCII digits and a unit (str.isdigit would accept "²" and 5000 digits).
_TIMEOUT_RE = re.compile(r"([0-9]{1,8})([HMSmun])")
_ANALYTICS_LIMIT = 256 * 1024
# Send bodies may exceed the message cap by the frame header and the SendReq field tag.
_ENVELOPE = 64


@dataclass(frozen=True, slots=True)
class _Method:
    request_type: type[ProtoMessage]
    max_body: int


def _status_of(exc: BaseException) -> tuple[GrpcStatus, str]:
    if isinstance(exc, PulseBeamError):
        return exc.grpc_status, str(exc)
    logger.error("signaling call failed", exc_info=exc)
    return GrpcStatus.INTERNAL, "internal server error"


def parse_grpc_timeout(value: str | None) -> float | None:
    """``grpc-timeout`` (e.g. ``900000m``) in seconds, or None when absent or malformed (a bad
    header is ignored, as if absent: the stream then rotates at ``--stream-max-age``)."""
    match = _TIMEOUT_RE.fullmatch(value) if value else None
    if match is None:
        return None
    return int(match[1]) * _TIMEOUT_UNITS[match[2]]


class GrpcWebMiddleware:
    """ASGI: serve the signaling service under ``/grpc/``, pass anything else to ``app``."""

    def __init__(
        self,
        app: ASGIApp,
        service: SignalingService,
        metrics: SignalingMetrics,
        *,
        max_message_bytes: int,
        cors_origins: Sequence[str] = ("*",),
    ) -> None:
        self._app = app
        self._service = service
        self._metrics = metrics
        self._any_origin = "*" in cors_origins
        self._origins = frozenset(cors_origins)
        small = 1024
        self._methods = {
            "Prepare": _Method(proto.PrepareReq, small),
            "Send": _Method(proto.SendReq, max_message_bytes + _ENVELOPE),
            "Recv": _Method(proto.RecvReq, small),
            "AnalyticsReport": _Method(proto.AnalyticsReportReq, _ANALYTICS_LIMIT),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX):
            await self._app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        cors = self._cors_headers(headers.get("origin"))
        if scope["method"] == "OPTIONS":
            await self._preflight(send, cors)
            return
        if scope["method"] != "POST":
            await _plain(send, 405, "gRPC-Web calls use POST\n", [*cors, (b"allow", b"POST")])
            return
        service_name, _, method_name = scope["path"][len(PREFIX) :].partition("/")
        method = self._methods.get(method_name) if service_name == proto.SERVICE_NAME else None
        if method is None:
            await self._unary_error(
                send, cors, GrpcStatus.UNIMPLEMENTED, f"no method {scope['path'][len(PREFIX) :]!r}"
            )
            return
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in _ACCEPTED_TYPES:
            await _plain(
                send,
                415,
                f"content type must be {CONTENT_TYPE} (got {content_type or 'none'!r})\n",
                cors,
            )
            return
        started = time.perf_counter()
        status = GrpcStatus.OK
        try:
            caller = await self._service.authenticate(headers.get("authorization"))
            request = await _read_request(receive, method)
            if method_name == "Recv":
                assert isinstance(request, proto.RecvReq)
                max_age = parse_grpc_timeout(headers.get("grpc-timeout"))
                del headers  # not needed for the stream's lifetime (memory per idle stream)
                status = await self._recv(caller, request, receive, send, cors, max_age)
                return
            response = await self._unary(method_name, caller, request)
        except Exception as exc:
            status, message = _status_of(exc)
            await self._unary_error(send, cors, status, message)
            return
        finally:
            self._metrics.call(method_name, status.name)
        self._metrics.call_time(method_name, time.perf_counter() - started)
        await send(_start(cors))
        body = encode_message(response.SerializeToString()) + encode_trailers(GrpcStatus.OK)
        await send({"type": "http.response.body", "body": body, "more_body": False})

    async def _unary(self, name: str, caller: Caller, request: ProtoMessage) -> ProtoMessage:
        service = self._service
        if isinstance(request, proto.SendReq):
            return await service.send(caller, request)
        if isinstance(request, proto.PrepareReq):
            return await service.prepare(caller, request)
        if isinstance(request, proto.AnalyticsReportReq):
            return await service.analytics_report(caller, request)
        raise AssertionError(f"no unary handler for {name}")  # pragma: no cover

    async def _recv(
        self,
        caller: Caller,
        request: proto.RecvReq,
        receive: Receive,
        send: Send,
        cors: list[tuple[bytes, bytes]],
        client_timeout: float | None,
    ) -> GrpcStatus:
        # The client's deadline, less a margin, caps the stream's age: it ends with OK before the
        # client would give up on it, and the SDK reopens it with the same conn_id.
        max_age = None if client_timeout is None else max(1.0, client_timeout * 0.95)
        stream = await self._service.open_stream(caller, request)
        try:
            await send(_start(cors))
        except BaseException:  # cancelled or disconnected before the pump took the stream over
            stream.close(GrpcStatus.CANCELLED, "client went away")
            await self._service.release(stream)
            raise

        async def watch_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            stream.close(GrpcStatus.CANCELLED, "client went away")

        watcher = asyncio.create_task(watch_disconnect())
        try:
            async with contextlib.aclosing(self._service.pump(stream, max_age=max_age)) as pump:
                async for payload in pump:
                    body = encode_message(payload)
                    await send({"type": "http.response.body", "body": body, "more_body": True})
            closed = stream.closed
            status = closed.status if closed is not None else GrpcStatus.OK
            message = closed.message if closed is not None else ""
        except Exception as exc:  # a broken connection or a router failure mid-stream
            status, message = _status_of(exc)
        finally:
            watcher.cancel()
        with contextlib.suppress(Exception):  # the client may be gone already
            body = encode_trailers(status, message)
            await send({"type": "http.response.body", "body": body, "more_body": False})
        return status

    async def _unary_error(
        self, send: Send, cors: list[tuple[bytes, bytes]], status: GrpcStatus, message: str
    ) -> None:
        await send(_start(cors))
        body = encode_trailers(status, message)
        await send({"type": "http.response.body", "body": body, "more_body": False})

    def _cors_headers(self, origin: str | None) -> list[tuple[bytes, bytes]]:
        if origin is None or not (self._any_origin or origin in self._origins):
            return []
        allowed = "*" if self._any_origin else origin
        return [
            (b"access-control-allow-origin", allowed.encode("latin-1")),
            (b"access-control-expose-headers", EXPOSE_HEADERS.encode()),
            (b"vary", b"origin"),
        ]

    async def _preflight(self, send: Send, cors: list[tuple[bytes, bytes]]) -> None:
        if not cors:
            await _plain(send, 403, "origin not allowed\n", [])
            return
        headers = [
            *cors,
            (b"access-control-allow-methods", b"POST, OPTIONS"),
            (b"access-control-allow-headers", ALLOW_HEADERS.encode()),
            (b"access-control-max-age", b"86400"),
        ]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _start(cors: list[tuple[bytes, bytes]]) -> MutableMapping[str, Any]:
    headers = [(b"content-type", CONTENT_TYPE.encode()), (b"cache-control", b"no-store"), *cors]
    return {"type": "http.response.start", "status": 200, "headers": headers}


async def _plain(send: Send, status: int, text: str, headers: list[tuple[bytes, bytes]]) -> None:
    body = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _read_request(receive: Receive, method: _Method) -> ProtoMessage:
    """Read the body (bounded), check it is exactly one uncompressed frame, parse it."""
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        event = await receive()
        if event["type"] == "http.disconnect":
            raise InvalidArgumentError("client went away before sending the request")
        chunk = event.get("body", b"")
        size += len(chunk)
        if size > method.max_body:
            raise ResourceExhaustedError(
                f"request body is over the {method.max_body}-byte limit of this method"
            )
        chunks.append(chunk)
        more = event.get("more_body", False)
    frames, rest = decode_frames(b"".join(chunks))
    name = method.request_type.DESCRIPTOR.name
    if rest:
        raise InvalidArgumentError(
            f"request body ends inside a gRPC-Web frame ({len(rest)} stray bytes): truncated"
        )
    if len(frames) != 1 or frames[0].is_trailers:
        raise InvalidArgumentError(
            f"request body must be exactly one gRPC-Web data frame with a {name}"
            f" (got {len(frames)} frames)"
        )
    if frames[0].flags & FLAG_COMPRESSED:
        raise InvalidArgumentError("compressed gRPC-Web messages are not supported: send identity")
    request = method.request_type()
    try:
        request.ParseFromString(frames[0].payload)
    except DecodeError:
        raise InvalidArgumentError(f"request is not a valid pulsebeam.v1.{name} message") from None
    return request
