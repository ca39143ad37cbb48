"""Typed errors of the peer SDK: every gRPC status the server answers becomes a PulseBeamError.

The classes come from :mod:`pulsebeam.errors` (a policy refusal is a ``PermissionDeniedError``,
a bad or expired token a ``TokenError``, …). Statuses without a class of their own (ABORTED,
INTERNAL, …) become a :class:`SignalingError` that carries the status. The official browser SDK
closes the peer on the statuses in :data:`FATAL_STATUSES` and retries the rest; so do we.
"""

from __future__ import annotations

from pulsebeam.errors import (
    ConflictError,
    GrpcStatus,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    PulseBeamError,
    ResourceExhaustedError,
    TokenError,
    UnavailableError,
)

__all__ = [
    "FATAL_STATUSES",
    "PeerClosedError",
    "SignalingError",
    "is_fatal",
    "status_error",
]

FATAL_STATUSES = frozenset(
    {
        GrpcStatus.PERMISSION_DENIED,
        GrpcStatus.INVALID_ARGUMENT,
        GrpcStatus.ABORTED,
        GrpcStatus.NOT_FOUND,
        GrpcStatus.UNAUTHENTICATED,
    }
)

_CLASS_FOR_STATUS: dict[GrpcStatus, type[PulseBeamError]] = {
    GrpcStatus.INVALID_ARGUMENT: InvalidArgumentError,
    GrpcStatus.UNAUTHENTICATED: TokenError,
    GrpcStatus.PERMISSION_DENIED: PermissionDeniedError,
    GrpcStatus.NOT_FOUND: NotFoundError,
    GrpcStatus.ALREADY_EXISTS: ConflictError,
    GrpcStatus.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    GrpcStatus.UNAVAILABLE: UnavailableError,
}


class SignalingError(PulseBeamError):
    """A gRPC status that has no class of its own in :mod:`pulsebeam.errors`."""

    def __init__(self, status: GrpcStatus, message: str) -> None:
        super().__init__(message)
        self.grpc_status = status


class PeerClosedError(PulseBeamError):
    """The peer or session was closed (by the application, the other side or a fatal error)."""

    grpc_status = GrpcStatus.CANCELLED


def status_error(status: int, message: str) -> PulseBeamError:
    """The typed error for a non-OK gRPC status; ``message`` should name the call."""
    try:
        code = GrpcStatus(status)
    except ValueError:
        code = GrpcStatus.UNKNOWN
    cls = _CLASS_FOR_STATUS.get(code)
    if cls is None:
        return SignalingError(code, message)
    return cls(message)


def is_fatal(error: PulseBeamError) -> bool:
    """True for the statuses on which the official SDK gives up instead of retrying."""
    return error.grpc_status in FATAL_STATUSES
