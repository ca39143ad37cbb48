"""Request and response bodies of the REST API (pydantic models, which also make the OpenAPI)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from pulsebeam.control.views import (
    KeyDetails,
    Role,
)

__all__ = [
    "AccountOut",
    "ApiTokenCreate",
    "ApiTokenCreated",
    "ApiTokenOut",
    "AuditOut",
    "AuditPage",
    "BanCreate",
    "BanOut",
    "ConnectionOut",
    "ConnectionPage",
    "Credentials",
    "ErrorBody",
    "ErrorDetail",
    "KeyCreate",
    "KeyCreated",
    "KeyOut",
    "MemberAdd",
    "MemberOut",
    "MemberUpdate",
    "PasswordChange",
    "ProjectCreate",
    "ProjectOut",
    "SessionOut",
    "UsageOut",
    "UsagePage",
]


class _Out(BaseModel):
    """Responses are read straight from the store's records (``X.of(record)``), field by name."""

    model_config = ConfigDict(from_attributes=True)

    @classmethod
    def of(cls, record: object) -> Self:
        return cls.model_validate(record)


class _In(BaseModel):
    """Request bodies refuse unknown fields, so a typo is an error rather than ignored."""

    model_config = ConfigDict(extra="forbid")


class ErrorDetail(BaseModel):
    code: str = Field(examples=["not_found"])
    message: str = Field(examples=["project 'prj_0123456789abcdef' not found"])


class ErrorBody(BaseModel):
    error: ErrorDetail


class Credentials(_In):
    email: str = Field(min_length=3, max_length=254)
    password: str = Field(min_length=1, max_length=256)


class PasswordChange(_In):
    current_password: str = Field(min_length=1, max_length=256)
    new_password: str = Field(min_length=1, max_length=256)


class AccountOut(_Out):
    id: str
    email: str
    created_at: datetime


class SessionOut(BaseModel):
    account: AccountOut
    csrf_token: str | None = Field(
        description="send it back in the X-CSRF-Token header of unsafe cookie-authenticated"
        " requests; null when authenticated by an API token"
    )
    expires_at: datetime | None
    via: Literal["session", "token"]


class ApiTokenCreate(_In):
    name: str = Field(min_length=1, max_length=100)
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)


class ApiTokenOut(_Out):
    id: str
    name: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None


class ApiTokenCreated(ApiTokenOut):
    token: str = Field(description="the Bearer token; shown only in this response")


class ProjectCreate(_In):
    name: str = Field(min_length=1, max_length=100)


class ProjectOut(_Out):
    id: str
    name: str
    created_at: datetime
    role: Role | None


class MemberAdd(_In):
    email: str = Field(min_length=3, max_length=254)
    role: Role = Role.MEMBER


class MemberUpdate(_In):
    role: Role


class MemberOut(_Out):
    account_id: str
    email: str
    role: Role
    added_at: datetime


class KeyCreate(_In):
    label: str = Field(default="", max_length=100)


class KeyOut(BaseModel):
    api_key: str = Field(description="the key id (kid_…) that tokens name")
    public_key: str
    label: str
    created_at: datetime
    created_by: str | None
    last_used_at: datetime | None
    needs_rotation: bool = Field(description="older than 90 days: create a new key, delete this")

    @classmethod
    def of(cls, k: KeyDetails, now: datetime) -> KeyOut:
        return cls(
            api_key=k.key.kid,
            public_key=k.key.public_key,
            label=k.key.label,
            created_at=k.key.created_at,
            created_by=k.created_by,
            last_used_at=k.last_used_at,
            needs_rotation=k.needs_rotation(now),
        )


class KeyCreated(BaseModel):
    api_key: str
    api_secret: str = Field(description="the private key; shown only in this response")
    public_key: str
    label: str
    created_at: datetime


class BanCreate(_In):
    group_pattern: str = Field(default="*", min_length=1, max_length=64)
    peer_pattern: str = Field(min_length=1, max_length=64)
    reason: str = Field(default="", max_length=500)
    expires_at: AwareDatetime | None = Field(
        default=None, description="when the ban ends (with a time zone, e.g. ...Z)"
    )


class BanOut(_Out):
    id: str
    group_pattern: str
    peer_pattern: str
    reason: str
    expires_at: datetime | None


class AuditOut(_Out):
    id: int
    at: datetime
    actor: str
    actor_id: str | None
    project_id: str | None
    action: str
    target: str | None
    details: dict[str, Any]


class AuditPage(BaseModel):
    items: list[AuditOut]
    next_before: int | None = Field(description="pass as ?before= for the next (older) page")


class UsageOut(_Out):
    day: date
    messages: int
    peak_streams: int
    turn_bytes: int
    turn_packets: int
    turn_allocations: int
    active_peers: int


class UsagePage(BaseModel):
    start: date
    end: date
    items: list[UsageOut]


class ConnectionOut(_Out):
    id: int
    at: datetime
    src_group: str
    src_peer: str
    src_conn: int
    dst_group: str
    dst_peer: str
    dst_conn: int
    event: str
    path: str | None


class ConnectionPage(BaseModel):
    items: list[ConnectionOut]
    next_before: int | None
