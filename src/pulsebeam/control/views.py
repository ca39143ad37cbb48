"""Read-only records the store returns to the REST API, the console and the admin CLI."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any

from pulsebeam.control.records import KeyInfo

__all__ = [
    "KEY_ROTATION_AGE",
    "AccountInfo",
    "Actor",
    "ApiTokenInfo",
    "AuditEntry",
    "ConnectionLogRow",
    "CreatedApiToken",
    "CreatedKey",
    "KeyDetails",
    "MemberInfo",
    "ProjectInfo",
    "Role",
    "SessionInfo",
    "UsageDay",
]

KEY_ROTATION_AGE = timedelta(days=90)
"""Keys older than this are flagged in listings (rotate them)."""


class Role(StrEnum):
    OWNER = "owner"  # manages members, and everything a member does
    MEMBER = "member"  # keys, bans, logs; may delete the project


@dataclass(frozen=True, slots=True)
class Actor:
    """Who makes a change, for the audit log: an account, or the admin CLI (``account_id=None``)."""

    label: str
    account_id: str | None = None

    @classmethod
    def admin_cli(cls) -> Actor:
        return cls("admin-cli")


@dataclass(frozen=True, slots=True)
class AccountInfo:
    id: str
    email: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A signed-in console session; ``token`` (the cookie value) exists only at creation."""

    account: AccountInfo
    csrf_token: str
    expires_at: datetime
    token: str | None = None


@dataclass(frozen=True, slots=True)
class ApiTokenInfo:
    id: str
    name: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None


@dataclass(frozen=True, slots=True)
class CreatedApiToken:
    info: ApiTokenInfo
    token: str  # shown once, stored only as a hash


@dataclass(frozen=True, slots=True)
class ProjectInfo:
    id: str
    name: str
    created_at: datetime
    role: Role | None = None  # the asking account's role, when asked as an account


@dataclass(frozen=True, slots=True)
class MemberInfo:
    account_id: str
    email: str
    role: Role
    added_at: datetime


@dataclass(frozen=True, slots=True)
class KeyDetails:
    key: KeyInfo
    created_by: str | None
    last_used_at: datetime | None

    def needs_rotation(self, now: datetime) -> bool:
        return now - self.key.created_at > KEY_ROTATION_AGE


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """A new key: ``api_secret`` is returned once and never stored."""

    key: KeyInfo
    api_secret: str


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    actor_id: str | None
    project_id: str | None
    action: str
    target: str | None
    details: dict[str, Any]


@dataclass(frozen=True, slots=True)
class UsageDay:
    project_id: str
    day: date
    messages: int
    peak_streams: int
    turn_bytes: int
    turn_packets: int
    turn_allocations: int
    active_peers: int  # distinct (group, peer) seen that day


@dataclass(frozen=True, slots=True)
class ConnectionLogRow:
    id: int
    project_id: str
    at: datetime
    src_group: str
    src_peer: str
    src_conn: int
    dst_group: str
    dst_peer: str
    dst_conn: int
    event: str
    path: str | None
