"""Every error PulseBeam raises on purpose, each carrying the status it maps to.

The tree::

    PulseBeamError                      (base; INTERNAL / 500)
    ├── ConfigError                     bad settings or CLI arguments (exit code 2)
    ├── InvalidArgumentError            INVALID_ARGUMENT / 400
    │   └── InvalidPatternError         a group/peer id or policy pattern out of spec
    ├── TokenError                      UNAUTHENTICATED / 401
    │   ├── MalformedTokenError         not a compact JWS, bad base64url or JSON, over size
    │   ├── UnsupportedAlgorithmError   `alg` other than EdDSA, or a `crit` header
    │   ├── UnknownKeyError             `kid` missing, malformed, unknown or revoked
    │   ├── InvalidSignatureError       the signature does not verify
    │   ├── ExpiredTokenError           `exp` is in the past (beyond the leeway)
    │   └── InvalidClaimsError          missing or ill-typed claims, ids or patterns out of spec
    ├── PermissionDeniedError           PERMISSION_DENIED / 403
    ├── NotFoundError                   NOT_FOUND / 404
    ├── ConflictError                   ALREADY_EXISTS / 409
    ├── ResourceExhaustedError          RESOURCE_EXHAUSTED / 429
    └── UnavailableError                UNAVAILABLE / 503

Each class says how it is reported on the wire: ``grpc_status`` for signaling (the official
browser SDK closes the peer on PERMISSION_DENIED, INVALID_ARGUMENT, ABORTED, NOT_FOUND and
UNAUTHENTICATED and retries the rest) and ``http_status`` for the REST API.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = [
    "ConfigError",
    "ConflictError",
    "ExpiredTokenError",
    "GrpcStatus",
    "InvalidArgumentError",
    "InvalidClaimsError",
    "InvalidPatternError",
    "InvalidSignatureError",
    "MalformedTokenError",
    "NotFoundError",
    "PermissionDeniedError",
    "PulseBeamError",
    "ResourceExhaustedError",
    "TokenError",
    "UnavailableError",
    "UnknownKeyError",
    "UnsupportedAlgorithmError",
]


class GrpcStatus(IntEnum):
    """gRPC status codes (the numbers are fixed by the gRPC spec)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class PulseBeamError(Exception):
    """Base of every deliberate PulseBeam error; ``str(err)`` is a message a person can act on."""

    grpc_status: GrpcStatus = GrpcStatus.INTERNAL
    http_status: int = 500


class ConfigError(PulseBeamError):
    """Settings (flags, TOML, environment) or CLI arguments that cannot be used."""

    grpc_status = GrpcStatus.FAILED_PRECONDITION
    http_status = 500


class InvalidArgumentError(PulseBeamError):
    grpc_status = GrpcStatus.INVALID_ARGUMENT
    http_status = 400


class InvalidPatternError(InvalidArgumentError, ValueError):
    """A group id, peer id or allow-policy pattern that breaks the documented rules."""


class TokenError(PulseBeamError):
    grpc_status = GrpcStatus.UNAUTHENTICATED
    http_status = 401


class MalformedTokenError(TokenError):
    pass


class UnsupportedAlgorithmError(TokenError):
    pass


class UnknownKeyError(TokenError):
    pass


class InvalidSignatureError(TokenError):
    pass


class ExpiredTokenError(TokenError):
    pass


class InvalidClaimsError(TokenError):
    pass


class PermissionDeniedError(PulseBeamError):
    grpc_status = GrpcStatus.PERMISSION_DENIED
    http_status = 403


class NotFoundError(PulseBeamError):
    grpc_status = GrpcStatus.NOT_FOUND
    http_status = 404


class ConflictError(PulseBeamError):
    grpc_status = GrpcStatus.ALREADY_EXISTS
    http_status = 409


class ResourceExhaustedError(PulseBeamError):
    grpc_status = GrpcStatus.RESOURCE_EXHAUSTED
    http_status = 429


class UnavailableError(PulseBeamError):
    grpc_status = GrpcStatus.UNAVAILABLE
    http_status = 503
