"""A minimal gRPC-Web client (binary protobuf over HTTP/1.1) for the Signaling service.

No maintained Python gRPC-Web client library exists (grpcio speaks HTTP/2 gRPC, not gRPC-Web),
so this is a thin layer over :mod:`pulsebeam.peer.http1` and the shared frame codec.
It sends what the official
browser SDK sends: ``Authorization: Bearer``, ``content-type: application/grpc-web+proto``,
``x-grpc-web: 1`` and a ``grpc-timeout``. Every failure becomes a typed error
(:func:`pulsebeam.peer.errors.status_error`); a server that cannot be reached is UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

from google.protobuf.message import DecodeError
from google.protobuf.message import Message as ProtoMessage

from pulsebeam.errors import GrpcStatus, InvalidArgumentError, PulseBeamError, UnavailableError
from pulsebeam.peer.errors import status_error
from pulsebeam.peer.http1 import Http1Client, TransportError
from pulsebeam.proto import SERVICE_NAME
from pulsebeam.signaling.grpcweb_frames import decode_frames, decode_trailers, encode_message

__all__ = ["GrpcWebClient"]

M = TypeVar("M", bound=ProtoMessage)

CONTENT_TYPE = "application/grpc-web+proto"
# What the official SDK sends on Recv and Send (15 minutes); the server rotates streams before it.
STREAM_TIMEOUT = "900000m"
# HTTP statuses mapped as the gRPC spec does for a response without grpc-status.
_HTTP_TO_GRPC = {
    400: GrpcStatus.INTERNAL,
    401: GrpcStatus.UNAUTHENTICATED,
    403: GrpcStatus.PERMISSION_DENIED,
    404: GrpcStatus.UNIMPLEMENTED,
    429: GrpcStatus.UNAVAILABLE,
    502: GrpcStatus.UNAVAILABLE,
    503: GrpcStatus.UNAVAILABLE,
    504: GrpcStatus.UNAVAILABLE,
}


class GrpcWebClient:
    """Calls ``<base_url>/pulsebeam.v1.Signaling/<Method>`` with the token of ``token()``."""

    def __init__(
        self,
        base_url: str,
        token: Callable[[], str],
        *,
        unary_timeout: float = 10.0,
        stream_idle_timeout: float = 120.0,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._token = token
        # No proxy from the environment: tokens and SDPs go to the signaling server only.
        try:
            self._http = Http1Client(self._base)
        except ValueError as exc:
            raise InvalidArgumentError(str(exc)) from None
        self._unary_timeout = unary_timeout
        self._stream_idle_timeout = stream_idle_timeout

    @staticmethod
    def _path(method: str) -> str:
        return f"/{SERVICE_NAME}/{method}"

    def _headers(self) -> dict[str, str]:
        return {
            "authorization": f"Bearer {self._token()}",
            "content-type": CONTENT_TYPE,
            "accept": CONTENT_TYPE,
            "x-grpc-web": "1",
            "grpc-timeout": STREAM_TIMEOUT,
        }

    def preconnect(self) -> None:
        """Open a connection ahead of need (``Recv`` takes it while ``Prepare`` has its own)."""
        self._http.preconnect()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def unary(self, method: str, request: ProtoMessage, response_type: type[M]) -> M:
        """One request, one response; raises the typed error of a non-OK status."""
        body = encode_message(request.SerializeToString())
        try:
            async with asyncio.timeout(self._unary_timeout):
                response = await self._http.post(self._path(method), self._headers(), body)
        except TransportError as exc:
            raise _unreachable(method, self._base, exc) from exc
        except TimeoutError:
            raise _unreachable(
                method, self._base, TransportError(f"no answer in {self._unary_timeout:g} s")
            ) from None
        _check_headers(method, response.status, response.headers)
        messages, trailers = _split_body(method, response.body)
        _check_trailers(method, trailers)
        if not messages:
            raise status_error(GrpcStatus.INTERNAL, f"{method}: the response had no message")
        return _parse(method, messages[0], response_type)

    async def server_stream(
        self,
        method: str,
        request: ProtoMessage,
        response_type: type[M],
        on_open: Callable[[], None] | None = None,
    ) -> AsyncIterator[M]:
        """Yields each streamed message; ends normally on OK trailers, else raises.

        ``on_open`` runs when the response headers arrive without an error: the server has
        accepted the stream.
        """
        body = encode_message(request.SerializeToString())
        try:
            async with self._http.stream(
                self._path(method), self._headers(), body, self._unary_timeout
            ) as response:
                trailers_only = response.headers.get("grpc-status") is not None
                if trailers_only or response.status != 200:
                    await response.read()
                _check_headers(method, response.status, response.headers)
                if trailers_only:
                    return  # an OK status with no messages at all
                if on_open is not None:
                    on_open()
                rest = b""
                async for chunk in response.chunks(self._stream_idle_timeout):
                    frames, rest = decode_frames(rest + chunk)
                    for frame in frames:
                        if frame.is_trailers:
                            _check_trailers(method, _trailers(method, frame.payload))
                            return
                        yield _parse(method, frame.payload, response_type)
        except TransportError as exc:
            raise _unreachable(method, self._base, exc) from exc
        raise UnavailableError(f"{method}: the stream ended without trailers")


def _unreachable(method: str, base: str, exc: TransportError) -> PulseBeamError:
    detail = str(exc) or type(exc).__name__
    return UnavailableError(f"{method}: cannot reach the signaling server at {base}: {detail}")


def _check_headers(method: str, http_status: int, headers: dict[str, str]) -> None:
    """Trailers-only errors come as headers; a non-gRPC answer is mapped by its HTTP status."""
    status = headers.get("grpc-status")
    if status is not None:
        _check_trailers(
            method,
            {
                "grpc-status": status,
                "grpc-message": urllib.parse.unquote(headers.get("grpc-message", "")),
            },
        )
        return
    if http_status != 200:
        code = _HTTP_TO_GRPC.get(http_status, GrpcStatus.UNKNOWN)
        raise status_error(code, f"{method}: HTTP {http_status} from the server")
    content_type = headers.get("content-type", "")
    if not content_type.startswith("application/grpc-web"):
        raise status_error(
            GrpcStatus.UNKNOWN, f"{method}: unexpected content-type {content_type!r}"
        )


def _split_body(method: str, content: bytes) -> tuple[list[bytes], dict[str, str]]:
    frames, rest = decode_frames(content)
    if rest:
        raise status_error(GrpcStatus.INTERNAL, f"{method}: truncated gRPC-Web frame")
    messages = [frame.payload for frame in frames if not frame.is_trailers]
    trailer_frames = [frame for frame in frames if frame.is_trailers]
    trailers = _trailers(method, trailer_frames[0].payload) if trailer_frames else {}
    return messages, trailers


def _trailers(method: str, payload: bytes) -> dict[str, str]:
    try:
        return decode_trailers(payload)
    except ValueError as exc:
        raise status_error(GrpcStatus.INTERNAL, f"{method}: bad trailers: {exc}") from None


def _check_trailers(method: str, trailers: dict[str, str]) -> None:
    raw = trailers.get("grpc-status")
    if raw is None:
        raise status_error(GrpcStatus.INTERNAL, f"{method}: the response had no grpc-status")
    try:
        status = int(raw)
    except ValueError:
        raise status_error(GrpcStatus.INTERNAL, f"{method}: bad grpc-status {raw!r}") from None
    if status != GrpcStatus.OK:
        message = trailers.get("grpc-message") or f"gRPC status {status}"
        raise status_error(status, f"{method}: {message}")


def _parse(method: str, payload: bytes, response_type: type[M]) -> M:
    message = response_type()
    try:
        message.ParseFromString(payload)
    except DecodeError as exc:
        raise status_error(GrpcStatus.INTERNAL, f"{method}: undecodable response: {exc}") from None
    return message
