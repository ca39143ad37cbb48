"""gRPC-Web for ``pulsebeam.v1.Signaling``, independent of the HTTP server that carries it.

Two transports use this endpoint: the HTTP/1.1 protocol of :mod:`.http1` (the hot path of
plain-HTTP deployments) and the ASGI middleware of :mod:`.grpcweb_asgi` (HTTP/2 under TLS, and
any request the HTTP/1.1 fast path leaves to ASGI). Why by hand: the Python gRPC-Web options are
proxies (Envoy) or WSGI-only libraries; the binary framing is five bytes per frame, and what
browsers need (PROTOCOL.md §3 "practicalities") is easiest to guarantee in one place:

- responses are HTTP 200 with content type exactly ``application/grpc-web+proto``;
- a unary answer is a data frame (zero-length for an empty message) and a trailers frame;
- errors go in a trailers frame of the 200 body (``grpc-status``, ``grpc-message``);
- CORS preflights allow ``authorization, content-type, grpc-timeout, x-grpc-web, x-user-agent``
  and responses expose ``grpc-status, grpc-message``;
- ``Recv`` writes one frame per message and ends with trailers; a disconnect ends it.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

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
    HEADER_SIZE,
    decode_frames,
    encode_message,
    encode_trailers,
)
from pulsebeam.signaling.metrics import SignalingMetrics
from pulsebeam.signaling.service import SignalingService
from pulsebeam.signaling.streams import Stream, StreamSink

__all__ = [
    "CONTENT_TYPE",
    "PREFIX",
    "Answer",
    "Call",
    "GrpcWebEndpoint",
    "Headers",
    "parse_grpc_timeout",
]

logger = logging.getLogger(__name__)

Headers = list[tuple[bytes, bytes]]

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
_SMALL = 1024
_OK_TRAILERS = encode_trailers(GrpcStatus.OK)
_EMPTY_OK = encode_message(b"") + _OK_TRAILERS  # the answer to most calls (SendResp is empty)


def parse_grpc_timeout(value: str | None) -> float | None:
    """``grpc-timeout`` (e.g. ``900000m``) in seconds, or None when absent or malformed (a bad
    header is ignored, as if absent: the stream then rotates at ``--stream-max-age``)."""
    match = _TIMEOUT_RE.fullmatch(value) if value else None
    if match is None:
        return None
    return int(match[1]) * _TIMEOUT_UNITS[match[2]]


@dataclass(frozen=True, slots=True)
class Answer:
    """A whole HTTP answer decided before the body is read (preflight, 405, 415, unknown method)."""

    status: int
    headers: Headers
    body: bytes


@dataclass(frozen=True, slots=True)
class Call:
    """An accepted gRPC-Web call, waiting for its body."""

    method: str
    request_type: type[ProtoMessage]
    max_body: int
    authorization: str | None
    timeout: float | None
    response_headers: Headers  # of the 200 answer: content type, no-store, CORS

    @property
    def streaming(self) -> bool:
        return self.method == "Recv"

    def too_large(self) -> str:
        return f"request body is over the {self.max_body}-byte limit of this method"


class GrpcWebEndpoint:
    """Turns gRPC-Web requests into service calls and their results into response bodies."""

    def __init__(
        self,
        service: SignalingService,
        metrics: SignalingMetrics,
        *,
        max_message_bytes: int,
        cors_origins: Sequence[str] = ("*",),
        inline_calls: bool = False,
    ) -> None:
        self.inline_calls = inline_calls
        """Calls (unary, and opening a stream) never wait on I/O but to fetch an unknown key
        (which runs as a task of its own): a transport may run them without a task of their
        own."""
        self._service = service
        self._metrics = metrics
        self._any_origin = "*" in cors_origins
        self._origins = frozenset(cors_origins)
        self._limits: dict[str, tuple[type[ProtoMessage], int]] = {
            "Prepare": (proto.PrepareReq, _SMALL),
            "Send": (proto.SendReq, max_message_bytes + _ENVELOPE),
            "Recv": (proto.RecvReq, _SMALL),
            "AnalyticsReport": (proto.AnalyticsReportReq, _ANALYTICS_LIMIT),
        }
        base = [(b"content-type", CONTENT_TYPE.encode()), (b"cache-control", b"no-store")]
        self._plain_headers = base  # shared, never mutated: the common case has no CORS

    # -- before the body ------------------------------------------------------------------------

    def route(self, method: str, path: str, headers: Mapping[str, str]) -> Answer | Call:
        """Decide from the request line and headers: an answer now, or a call to run on the body.

        ``path`` starts with :data:`PREFIX`; ``headers`` has lower-case names and holds at least
        ``authorization``, ``content-type``, ``origin`` and ``grpc-timeout`` when present."""
        cors = self._cors_headers(headers.get("origin"))
        if method == "OPTIONS":
            return self._preflight(cors)
        if method != "POST":
            return _plain(405, "gRPC-Web calls use POST\n", [*cors, (b"allow", b"POST")])
        service_name, _, method_name = path[len(PREFIX) :].partition("/")
        limits = self._limits.get(method_name) if service_name == proto.SERVICE_NAME else None
        response_headers = [*self._plain_headers, *cors] if cors else self._plain_headers
        if limits is None:
            body = encode_trailers(GrpcStatus.UNIMPLEMENTED, f"no method {path[len(PREFIX) :]!r}")
            return Answer(200, response_headers, body)
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in _ACCEPTED_TYPES:
            return _plain(
                415,
                f"content type must be {CONTENT_TYPE} (got {content_type or 'none'!r})\n",
                cors,
            )
        request_type, max_body = limits
        return Call(
            method_name,
            request_type,
            max_body,
            headers.get("authorization"),
            parse_grpc_timeout(headers.get("grpc-timeout")),
            response_headers,
        )

    def _cors_headers(self, origin: str | None) -> Headers:
        if origin is None or not (self._any_origin or origin in self._origins):
            return []
        allowed = "*" if self._any_origin else origin
        return [
            (b"access-control-allow-origin", allowed.encode("latin-1")),
            (b"access-control-expose-headers", EXPOSE_HEADERS.encode()),
            (b"vary", b"origin"),
        ]

    @staticmethod
    def _preflight(cors: Headers) -> Answer:
        if not cors:
            return _plain(403, "origin not allowed\n", [])
        headers = [
            *cors,
            (b"access-control-allow-methods", b"POST, OPTIONS"),
            (b"access-control-allow-headers", ALLOW_HEADERS.encode()),
            (b"access-control-max-age", b"86400"),
        ]
        return Answer(204, headers, b"")

    # -- with the body --------------------------------------------------------------------------

    async def unary(self, call: Call, body: bytes) -> bytes:
        """Run a unary call; returns the response body (the answer, or the error trailers)."""
        started = time.perf_counter()
        service = self._service
        try:
            caller = await service.authenticate(call.authorization)
            request = _parse(call, body)
            response: ProtoMessage
            if isinstance(request, proto.SendReq):
                response = await service.send(caller, request)
            elif isinstance(request, proto.PrepareReq):
                response = await service.prepare(caller, request)
            else:
                assert isinstance(request, proto.AnalyticsReportReq), call.method
                response = await service.analytics_report(caller, request)
        except Exception as exc:
            return self.failure(call, exc)
        self._metrics.call(call.method, "OK")
        self._metrics.call_time(call.method, time.perf_counter() - started)
        data = response.SerializeToString()
        return encode_message(data) + _OK_TRAILERS if data else _EMPTY_OK

    async def open_recv(self, call: Call, body: bytes, sink: StreamSink) -> Stream:
        """Open and start a ``Recv`` stream on ``sink``; raises on refusal (see :meth:`failure`).

        The sink must not be ready until the transport has sent the response headers."""
        service = self._service
        caller = await service.authenticate(call.authorization)
        request = _parse(call, body)
        assert isinstance(request, proto.RecvReq)
        stream = await service.open_stream(caller, request, sink, client_timeout=call.timeout)
        self._metrics.call(call.method, "OK")
        return stream

    def failure(self, call: Call, exc: BaseException) -> bytes:
        """The trailers-only body that answers a failed call, counted in the metrics."""
        if isinstance(exc, PulseBeamError):
            status, message = exc.grpc_status, str(exc)
        else:
            logger.error("signaling call %s failed", call.method, exc_info=exc)
            status, message = GrpcStatus.INTERNAL, "internal server error"
        self._metrics.call(call.method, status.name)
        return encode_trailers(status, message)

    def too_large(self, call: Call) -> bytes:
        return self.failure(call, ResourceExhaustedError(call.too_large()))


def _plain(status: int, text: str, headers: Headers) -> Answer:
    return Answer(
        status, [(b"content-type", b"text/plain; charset=utf-8"), *headers], text.encode()
    )


def _parse(call: Call, body: bytes) -> ProtoMessage:
    """Check the body is exactly one uncompressed frame and parse it."""
    request = call.request_type()
    if len(body) >= HEADER_SIZE and body[0] == 0 and _length(body) == len(body) - HEADER_SIZE:
        payload = body[HEADER_SIZE:]  # the usual case, without the general decoder's objects
    else:
        payload = _single_frame(call, body)
    try:
        request.ParseFromString(payload)
    except DecodeError:
        name = call.request_type.DESCRIPTOR.name
        raise InvalidArgumentError(f"request is not a valid pulsebeam.v1.{name} message") from None
    return request


def _length(body: bytes) -> int:
    return int.from_bytes(body[1:HEADER_SIZE], "big")


def _single_frame(call: Call, body: bytes) -> bytes:
    """The payload of a body that is not one plain data frame, or the error that says why."""
    frames, rest = decode_frames(body)
    name = call.request_type.DESCRIPTOR.name
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
    return frames[0].payload
