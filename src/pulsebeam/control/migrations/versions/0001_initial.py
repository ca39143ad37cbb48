"""Initial control-plane schema: accounts, sessions, API tokens, projects, memberships, keys,
bans, audit events, usage, connection log and analytics.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = 24


def _ts(name: str, nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _serial() -> sa.Column[int]:
    return sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True)


def _fk(owner: str, name: str, referred: str) -> sa.Column[str]:
    return sa.Column(
        name,
        sa.String(ID),
        sa.ForeignKey(f"{referred}.id", name=f"fk_{owner}_{name}_{referred}", ondelete="CASCADE"),
        nullable=False,
    )


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.String(ID)),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("password_hash", sa.String(256), nullable=False),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_accounts"),
        sa.UniqueConstraint("email", name="uq_accounts_email"),
    )
    op.create_table(
        "web_sessions",
        sa.Column("id_hash", sa.String(64)),
        _fk("web_sessions", "account_id", "accounts"),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        _ts("created_at"),
        _ts("expires_at"),
        sa.PrimaryKeyConstraint("id_hash", name="pk_web_sessions"),
    )
    op.create_index("ix_web_sessions_account_id", "web_sessions", ["account_id"])
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(ID)),
        _fk("api_tokens", "account_id", "accounts"),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        _ts("created_at"),
        _ts("expires_at", nullable=True),
        _ts("last_used_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_api_tokens_token_hash"),
    )
    op.create_index("ix_api_tokens_account_id", "api_tokens", ["account_id"])
    op.create_table(
        "projects",
        sa.Column("id", sa.String(ID)),
        sa.Column("name", sa.String(100), nullable=False),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_projects"),
    )
    op.create_table(
        "memberships",
        _fk("memberships", "project_id", "projects"),
        _fk("memberships", "account_id", "accounts"),
        sa.Column("role", sa.String(16), nullable=False),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("project_id", "account_id", name="pk_memberships"),
    )
    op.create_index("ix_memberships_account_id", "memberships", ["account_id"])
    op.create_table(
        "keys",
        sa.Column("kid", sa.String(ID)),
        _fk("keys", "project_id", "projects"),
        sa.Column("public_key", sa.String(67), nullable=False),
        sa.Column("label", sa.String(100), nullable=False),
        _ts("created_at"),
        sa.Column("created_by", sa.String(254), nullable=True),
        _ts("last_used_at", nullable=True),
        sa.PrimaryKeyConstraint("kid", name="pk_keys"),
    )
    op.create_index("ix_keys_project_id", "keys", ["project_id"])
    op.create_table(
        "bans",
        sa.Column("id", sa.String(ID)),
        _fk("bans", "project_id", "projects"),
        sa.Column("group_pattern", sa.String(64), nullable=False),
        sa.Column("peer_pattern", sa.String(64), nullable=False),
        sa.Column("reason", sa.String(500), nullable=False),
        _ts("created_at"),
        sa.Column("created_by", sa.String(254), nullable=True),
        _ts("expires_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_bans"),
    )
    op.create_index("ix_bans_project_id", "bans", ["project_id"])
    op.create_table(
        "audit_events",
        _serial(),
        _ts("at"),
        sa.Column("actor_id", sa.String(ID), nullable=True),
        sa.Column("actor", sa.String(254), nullable=False),
        sa.Column("project_id", sa.String(ID), nullable=True),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(254), nullable=True),
        sa.Column("details", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_events"),
    )
    op.create_index("ix_audit_events_project_id_id", "audit_events", ["project_id", "id"])
    counters = ("messages", "peak_streams", "turn_bytes", "turn_packets", "turn_allocations")
    op.create_table(
        "usage_daily",
        sa.Column("project_id", sa.String(ID)),
        sa.Column("day", sa.Date()),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in counters),
        sa.PrimaryKeyConstraint("project_id", "day", name="pk_usage_daily"),
    )
    op.create_table(
        "usage_peers",
        sa.Column("project_id", sa.String(ID)),
        sa.Column("day", sa.Date()),
        sa.Column("group_id", sa.String(64)),
        sa.Column("peer_id", sa.String(64)),
        sa.PrimaryKeyConstraint("project_id", "day", "group_id", "peer_id", name="pk_usage_peers"),
    )
    op.create_table(
        "connection_log",
        _serial(),
        sa.Column("project_id", sa.String(ID), nullable=False),
        _ts("at"),
        sa.Column("src_group", sa.String(64), nullable=False),
        sa.Column("src_peer", sa.String(64), nullable=False),
        sa.Column("src_conn", sa.BigInteger(), nullable=False),
        sa.Column("dst_group", sa.String(64), nullable=False),
        sa.Column("dst_peer", sa.String(64), nullable=False),
        sa.Column("dst_conn", sa.BigInteger(), nullable=False),
        sa.Column("event", sa.String(16), nullable=False),
        sa.Column("path", sa.String(16), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_connection_log"),
    )
    op.create_index("ix_connection_log_project_id_id", "connection_log", ["project_id", "id"])
    op.create_index("ix_connection_log_at", "connection_log", ["at"])
    op.create_table(
        "analytics",
        _serial(),
        sa.Column("project_id", sa.String(ID), nullable=False),
        _ts("at"),
        sa.Column("src_group", sa.String(64), nullable=False),
        sa.Column("src_peer", sa.String(64), nullable=False),
        sa.Column("dst_group", sa.String(64), nullable=False),
        sa.Column("dst_peer", sa.String(64), nullable=False),
        sa.Column("metrics", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_analytics"),
    )
    op.create_index("ix_analytics_project_id_id", "analytics", ["project_id", "id"])
    op.create_index("ix_analytics_at", "analytics", ["at"])


def downgrade() -> None:
    for table in (
        "analytics",
        "connection_log",
        "usage_peers",
        "usage_daily",
        "audit_events",
        "bans",
        "keys",
        "memberships",
        "projects",
        "api_tokens",
        "web_sessions",
        "accounts",
    ):
        op.drop_table(table)
