"""Plain records passed between the control plane and its consumers (signaling, TURN, console).

The store returns and accepts these, so the signaling and TURN layers never touch ORM objects and
can batch their writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

from pulsebeam.auth.policy import pattern_matches

__all__ = ["AnalyticsEntry", "BanInfo", "ConnectionLogEntry", "KeyInfo", "UsageDelta"]


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """The public half of an API key and the project it belongs to."""

    kid: str
    project_id: str
    public_key: str  # "pk_" + 64 hex
    label: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class BanInfo:
    """Peers of a project matching both patterns are refused and their streams closed."""

    id: str
    project_id: str
    group_pattern: str
    peer_pattern: str
    reason: str
    expires_at: datetime | None

    def matches(self, group_id: str, peer_id: str) -> bool:
        return pattern_matches(self.group_pattern, group_id) and pattern_matches(
            self.peer_pattern, peer_id
        )

    def active_at(self, now: datetime) -> bool:
        return self.expires_at is None or now < self.expires_at


@dataclass(frozen=True, slots=True)
class UsageDelta:
    """Additions to one project's usage for one UTC day; the store sums (and maxes) them."""

    project_id: str
    day: date
    messages: int = 0
    peak_streams: int = 0  # merged with max()
    turn_bytes: int = 0
    turn_packets: int = 0
    turn_allocations: int = 0
    peers: frozenset[tuple[str, str]] = field(default_factory=frozenset)  # (group, peer) seen


@dataclass(frozen=True, slots=True)
class ConnectionLogEntry:
    """Who signaled whom, when: one row per (src, dst) session start or end, not per message."""

    project_id: str
    at: datetime
    src_group: str
    src_peer: str
    src_conn: int
    dst_group: str
    dst_peer: str
    dst_conn: int
    event: str  # "join", "connect", "bye", "report"
    path: str | None = None  # "direct" or "relay", from analytics where known


@dataclass(frozen=True, slots=True)
class AnalyticsEntry:
    """One client analytics metric, kept (bounded) for the connection log and debugging."""

    project_id: str
    at: datetime
    src_group: str
    src_peer: str
    dst_group: str
    dst_peer: str
    metrics: dict[str, int]  # name -> value (event codes as integers, rtt_us, quality_score)
