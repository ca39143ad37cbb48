"""Usage, connection-log and analytics records, gathered in memory and written in batches.

Signaling sees every message; the store must not. Counters accumulate per project and UTC day
and are flushed every few seconds (and at shutdown) as :class:`UsageDelta` rows the store sums.
Log entries wait in bounded buffers: when the store falls behind, the oldest entries are dropped
and counted (``pulsebeam_records_dropped``) rather than growing memory.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from pulsebeam.control.records import AnalyticsEntry, ConnectionLogEntry, UsageDelta
from pulsebeam.signaling.metrics import SignalingMetrics
from pulsebeam.signaling.store import RecordSink

__all__ = ["Recorder"]

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class _Usage:
    messages: int = 0
    peak_streams: int = 0
    peers: set[tuple[str, str]] = field(default_factory=set)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Recorder:
    def __init__(
        self,
        sink: RecordSink,
        metrics: SignalingMetrics,
        *,
        max_pending: int = 10_000,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._sink = sink
        self._metrics = metrics
        self._clock = clock
        self._usage: dict[tuple[str, date], _Usage] = {}
        self._keys_used: dict[str, datetime] = {}
        self._connections: collections.deque[ConnectionLogEntry] = collections.deque(
            maxlen=max_pending
        )
        self._analytics: collections.deque[AnalyticsEntry] = collections.deque(maxlen=max_pending)
        self._lock = asyncio.Lock()
        self._recent = clock()
        self._recent_until = time.monotonic() + 1.0

    def now(self) -> datetime:
        return self._clock()

    def _recent_now(self) -> datetime:
        """``now()``, at most a second old: enough for a record's day and a key's last use,
        and it spares reading the wall clock twice per relayed message."""
        mono = time.monotonic()
        if mono >= self._recent_until:
            self._recent = self._clock()
            self._recent_until = mono + 1.0
        return self._recent

    def _day(self, project_id: str) -> _Usage:
        key = (project_id, self._recent_now().date())
        usage = self._usage.get(key)
        if usage is None:
            usage = self._usage[key] = _Usage()
        return usage

    def stream_opened(self, project_id: str, group_id: str, peer_id: str, open_now: int) -> None:
        usage = self._day(project_id)
        usage.peers.add((group_id, peer_id))
        usage.peak_streams = max(usage.peak_streams, open_now)

    def message(self, project_id: str) -> None:
        self._day(project_id).messages += 1

    def key_used(self, kid: str) -> None:
        self._keys_used[kid] = self._recent_now()

    def connection(self, entry: ConnectionLogEntry) -> None:
        if len(self._connections) == self._connections.maxlen:
            self._metrics.records_dropped.labels("connection").inc()
        self._connections.append(entry)

    def analytics(self, entry: AnalyticsEntry) -> None:
        if len(self._analytics) == self._analytics.maxlen:
            self._metrics.records_dropped.labels("analytics").inc()
        self._analytics.append(entry)

    async def flush(self) -> None:
        """Write what accumulated; on a store error the batch is kept for the next flush."""
        async with self._lock:
            usage, self._usage = self._usage, {}
            keys, self._keys_used = self._keys_used, {}
            connections = list(self._connections)
            analytics = list(self._analytics)
            self._connections.clear()
            self._analytics.clear()
            deltas = [
                UsageDelta(
                    project_id=project_id,
                    day=day,
                    messages=u.messages,
                    peak_streams=u.peak_streams,
                    peers=frozenset(u.peers),
                )
                for (project_id, day), u in usage.items()
            ]
            try:
                if keys:
                    await self._sink.mark_keys_used(keys)
                    keys = {}
                if deltas:
                    await self._sink.record_usage(deltas)
                    deltas = []
                if connections:
                    await self._sink.record_connections(connections)
                    connections = []
                if analytics:
                    await self._sink.record_analytics(analytics)
                    analytics = []
            except Exception:
                logger.exception("writing signaling records failed; keeping them for a retry")
                self._restore(keys, deltas, connections, analytics)

    def _restore(
        self,
        keys: dict[str, datetime],
        deltas: list[UsageDelta],
        connections: list[ConnectionLogEntry],
        analytics: list[AnalyticsEntry],
    ) -> None:
        for kid, at in keys.items():
            self._keys_used.setdefault(kid, at)
        for d in deltas:
            u = self._usage.setdefault((d.project_id, d.day), _Usage())
            u.messages += d.messages
            u.peak_streams = max(u.peak_streams, d.peak_streams)
            u.peers |= d.peers
        # Older entries go first; the deques' bound still applies.
        self._connections.extendleft(reversed(connections))
        self._analytics.extendleft(reversed(analytics))

    async def run(self, interval: float) -> None:
        """Flush every ``interval`` seconds until cancelled (the owner flushes once more)."""
        while True:
            await asyncio.sleep(interval)
            await self.flush()
