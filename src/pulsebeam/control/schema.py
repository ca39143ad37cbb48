"""The control plane's tables (SQLAlchemy Core), shared by the store and the Alembic migrations.

Telemetry tables (usage, connection log, analytics) carry a project id but no foreign key: the
signaling layer flushes them in batches, and a batch must not fail because a project was deleted
a moment earlier. The store filters unknown projects on write and deletes rows with the project.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)
from sqlalchemy.types import Date

__all__ = [
    "UTCDateTime",
    "accounts",
    "analytics",
    "api_tokens",
    "audit_events",
    "bans",
    "connection_log",
    "keys",
    "memberships",
    "metadata",
    "projects",
    "usage_daily",
    "usage_peers",
    "web_sessions",
]


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out; SQLite keeps no zone, so it stores naive UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

ID = 24  # "acc_"/"prj_"/"ban_"/"tok_"/"kid_" + 16 hex, with room to spare


def _fk(table: str) -> ForeignKey:
    return ForeignKey(f"{table}.id", ondelete="CASCADE")


accounts = Table(
    "accounts",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("email", String(254), nullable=False, unique=True),
    Column("password_hash", String(256), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

web_sessions = Table(
    "web_sessions",
    metadata,
    Column("id_hash", String(64), primary_key=True),  # sha256 of the cookie value
    Column("account_id", String(ID), _fk("accounts"), nullable=False),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Index(None, "account_id"),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("account_id", String(ID), _fk("accounts"), nullable=False),
    Column("name", String(100), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime),
    Column("last_used_at", UTCDateTime),
    Index(None, "account_id"),
)

projects = Table(
    "projects",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("name", String(100), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

memberships = Table(
    "memberships",
    metadata,
    Column("project_id", String(ID), _fk("projects"), primary_key=True),
    Column("account_id", String(ID), _fk("accounts"), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index(None, "account_id"),
)

keys = Table(
    "keys",
    metadata,
    Column("kid", String(ID), primary_key=True),
    Column("project_id", String(ID), _fk("projects"), nullable=False),
    Column("public_key", String(67), nullable=False),
    Column("label", String(100), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(254)),  # actor label (email or "admin-cli")
    Column("last_used_at", UTCDateTime),
    Index(None, "project_id"),
)

bans = Table(
    "bans",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("project_id", String(ID), _fk("projects"), nullable=False),
    Column("group_pattern", String(64), nullable=False),
    Column("peer_pattern", String(64), nullable=False),
    Column("reason", String(500), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(254)),
    Column("expires_at", UTCDateTime),
    Index(None, "project_id"),
)

# No foreign keys: the audit trail outlives the accounts and projects it mentions.
audit_events = Table(
    "audit_events",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("at", UTCDateTime, nullable=False),
    Column("actor_id", String(ID)),
    Column("actor", String(254), nullable=False),
    Column("project_id", String(ID)),
    Column("action", String(64), nullable=False),
    Column("target", String(254)),
    Column("details", Text, nullable=False),  # JSON object
    Index(None, "project_id", "id"),
)

usage_daily = Table(
    "usage_daily",
    metadata,
    Column("project_id", String(ID), primary_key=True),
    Column("day", Date, primary_key=True),
    Column("messages", BigInteger, nullable=False),
    Column("peak_streams", BigInteger, nullable=False),
    Column("turn_bytes", BigInteger, nullable=False),
    Column("turn_packets", BigInteger, nullable=False),
    Column("turn_allocations", BigInteger, nullable=False),
)

# One row per distinct (group, peer) seen per project and day: daily active peers.
usage_peers = Table(
    "usage_peers",
    metadata,
    Column("project_id", String(ID), primary_key=True),
    Column("day", Date, primary_key=True),
    Column("group_id", String(64), primary_key=True),
    Column("peer_id", String(64), primary_key=True),
)

connection_log = Table(
    "connection_log",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("project_id", String(ID), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("src_group", String(64), nullable=False),
    Column("src_peer", String(64), nullable=False),
    Column("src_conn", BigInteger, nullable=False),
    Column("dst_group", String(64), nullable=False),
    Column("dst_peer", String(64), nullable=False),
    Column("dst_conn", BigInteger, nullable=False),
    Column("event", String(16), nullable=False),
    Column("path", String(16)),
    Index(None, "project_id", "id"),
    Index(None, "at"),
)

analytics = Table(
    "analytics",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("project_id", String(ID), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("src_group", String(64), nullable=False),
    Column("src_peer", String(64), nullable=False),
    Column("dst_group", String(64), nullable=False),
    Column("dst_peer", String(64), nullable=False),
    Column("metrics", Text, nullable=False),  # JSON object name -> int
    Index(None, "project_id", "id"),
    Index(None, "at"),
)
