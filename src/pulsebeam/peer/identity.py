"""Who a peer is: its ``PeerInfo`` (group, peer, connection) read from its token, and roles.

The SDK learns its group and peer id from its own token without verifying it (only the server
can), exactly as the official SDK does. The connection id is random per peer and outside the
reserved range 0-16 (0 addresses "the newest connection of that peer").
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from pulsebeam.auth import decode_unverified, validate_id
from pulsebeam.errors import InvalidArgumentError, MalformedTokenError
from pulsebeam.proto import PeerInfo as PeerInfoProto

__all__ = ["DISCOVERY_CONN_ID", "RESERVED_CONN_IDS", "PeerInfo", "TokenIdentity", "is_impolite"]

DISCOVERY_CONN_ID = 0
RESERVED_CONN_IDS = 16
_MAX_CONN_ID = 2**32 - 1


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """One connection of one peer: ``group_id``/``peer_id`` plus its ``conn_id``."""

    group_id: str
    peer_id: str
    conn_id: int

    @classmethod
    def new_connection(cls, group_id: str, peer_id: str) -> PeerInfo:
        conn_id = RESERVED_CONN_IDS + 1 + secrets.randbelow(_MAX_CONN_ID - RESERVED_CONN_IDS)
        return cls(group_id, peer_id, conn_id)

    @classmethod
    def from_proto(cls, info: PeerInfoProto) -> PeerInfo:
        return cls(info.group_id, info.peer_id, info.conn_id)

    def to_proto(self) -> PeerInfoProto:
        return PeerInfoProto(group_id=self.group_id, peer_id=self.peer_id, conn_id=self.conn_id)

    def __str__(self) -> str:
        return f"{self.group_id}/{self.peer_id}#{self.conn_id}"


def is_impolite(local: PeerInfo, other: PeerInfo) -> bool:
    """Perfect-negotiation role: the higher ``conn_id`` is impolite; ties go to the higher id."""
    if local.conn_id != other.conn_id:
        return local.conn_id > other.conn_id
    return local.peer_id > other.peer_id


@dataclass(frozen=True, slots=True)
class TokenIdentity:
    """The unverified claims a peer needs from its own token."""

    group_id: str
    peer_id: str
    expires_at: float

    @classmethod
    def of(cls, token: str) -> TokenIdentity:
        payload = decode_unverified(token).payload
        gid, pid, exp = payload.get("gid"), payload.get("pid"), payload.get("exp")
        if not isinstance(gid, str) or not isinstance(pid, str):
            raise MalformedTokenError("the token has no 'gid'/'pid' string claims")
        if isinstance(exp, bool) or not isinstance(exp, int | float):
            raise MalformedTokenError("the token has no numeric 'exp' claim")
        try:
            return cls(validate_id(gid, "gid"), validate_id(pid, "pid"), float(exp))
        except InvalidArgumentError as exc:
            raise MalformedTokenError(f"the token's identity is out of spec: {exc}") from None
