"""What signaling needs from the control-plane store: nothing more (store interfaces are split
by consumer, so these Protocols are all that this package depends on)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Protocol

from pulsebeam.control.records import (
    AnalyticsEntry,
    BanInfo,
    ConnectionLogEntry,
    KeyInfo,
    UsageDelta,
)

__all__ = ["KeySource", "RecordSink", "SignalingStore"]


class KeySource(Protocol):
    """Keys and bans, read when a node starts, on a cache miss and on periodic resync."""

    async def get_key(self, kid: str) -> KeyInfo | None: ...

    async def list_keys(self) -> list[KeyInfo]: ...

    async def list_bans(self, project_id: str | None = None) -> list[BanInfo]: ...


class RecordSink(Protocol):
    """Batched writes of what signaling observed."""

    async def mark_keys_used(self, used: Mapping[str, datetime]) -> None: ...

    async def record_usage(self, deltas: Sequence[UsageDelta]) -> None: ...

    async def record_connections(self, entries: Sequence[ConnectionLogEntry]) -> None: ...

    async def record_analytics(self, entries: Sequence[AnalyticsEntry]) -> None: ...


class SignalingStore(KeySource, RecordSink, Protocol):
    """Both halves, as the composition root hands them over."""
