"""Usage counters, the connection log and client analytics: batched writes from signaling and
TURN (one call per flush, many rows), and the queries behind the console's charts and logs.

Rows for projects that no longer exist are dropped on write, so a flush racing a project's
deletion neither fails nor leaves orphans. Logs are kept for a bounded time (see ``prune``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Table, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from pulsebeam.control.base import StoreBase, utcnow
from pulsebeam.control.projects import check_page_limit
from pulsebeam.control.records import AnalyticsEntry, ConnectionLogEntry, UsageDelta
from pulsebeam.control.schema import (
    analytics,
    connection_log,
    keys,
    projects,
    usage_daily,
    usage_peers,
)
from pulsebeam.control.views import ConnectionLogRow, UsageDay
from pulsebeam.errors import InvalidArgumentError

__all__ = ["CONNECTION_LOG_RETENTION", "MAX_USAGE_DAYS", "Retention", "TelemetryMixin"]

logger = logging.getLogger(__name__)

CONNECTION_LOG_RETENTION = timedelta(days=30)
MAX_USAGE_DAYS = 366
_COUNTERS = ("messages", "turn_bytes", "turn_packets", "turn_allocations")


@dataclass(slots=True)
class Retention:
    """How long logs are kept, and when they were last pruned (at most once per ``every``)."""

    connection_log: timedelta = CONNECTION_LOG_RETENTION
    analytics: timedelta = timedelta(days=7)
    every: timedelta = timedelta(hours=1)
    last_pruned: datetime | None = field(default=None)


def _merge(deltas: Sequence[UsageDelta]) -> dict[tuple[str, date], dict[str, Any]]:
    """Fold a batch into one row per (project, day): one upsert may touch a row only once."""
    merged: dict[tuple[str, date], dict[str, Any]] = {}
    for d in deltas:
        row = merged.setdefault(
            (d.project_id, d.day),
            {"project_id": d.project_id, "day": d.day, "peak_streams": 0, "peers": set()}
            | dict.fromkeys(_COUNTERS, 0),
        )
        for name in _COUNTERS:
            row[name] += getattr(d, name)
        row["peak_streams"] = max(row["peak_streams"], d.peak_streams)
        row["peers"].update(d.peers)
    return merged


class TelemetryMixin(StoreBase):
    _retention: Retention

    def _insert(self, table: Table) -> Any:
        """An INSERT that can say ON CONFLICT (both dialects spell it the same way)."""
        dialect = postgresql if self.dialect == "postgresql" else sqlite
        return dialect.insert(table)

    async def _live_projects(self, conn: AsyncConnection, ids: Iterable[str]) -> set[str]:
        wanted = set(ids)
        if not wanted:
            return set()
        rows = await conn.execute(select(projects.c.id).where(projects.c.id.in_(wanted)))
        return {row.id for row in rows}

    # -- batched writes --------------------------------------------------------------------

    async def mark_keys_used(self, last_used: Mapping[str, datetime]) -> None:
        """Record when keys were last used; never moves a timestamp backwards."""
        if not last_used:
            return
        async with self._tx() as conn:
            for kid, at in sorted(last_used.items()):
                await conn.execute(
                    update(keys)
                    .where(keys.c.kid == kid)
                    .where((keys.c.last_used_at.is_(None)) | (keys.c.last_used_at < at))
                    .values(last_used_at=at)
                )

    async def record_usage(self, deltas: Sequence[UsageDelta]) -> None:
        merged = _merge(deltas)
        if not merged:
            return
        greatest = func.greatest if self.dialect == "postgresql" else func.max
        async with self._tx() as conn:
            live = await self._live_projects(conn, (project for project, _ in merged))
            rows = [row for (project, _), row in sorted(merged.items()) if project in live]
            if not rows:
                return
            stmt = self._insert(usage_daily)
            stmt = stmt.on_conflict_do_update(
                index_elements=["project_id", "day"],
                set_={
                    **{name: usage_daily.c[name] + stmt.excluded[name] for name in _COUNTERS},
                    "peak_streams": greatest(
                        usage_daily.c.peak_streams, stmt.excluded.peak_streams
                    ),
                },
            )
            await conn.execute(stmt, [{k: v for k, v in r.items() if k != "peers"} for r in rows])
            peers = [
                {"project_id": r["project_id"], "day": r["day"], "group_id": g, "peer_id": p}
                for r in rows
                for g, p in sorted(r["peers"])
            ]
            if peers:
                await conn.execute(self._insert(usage_peers).on_conflict_do_nothing(), peers)

    async def record_connections(self, entries: Sequence[ConnectionLogEntry]) -> None:
        async with self._tx() as conn:
            live = await self._live_projects(conn, (e.project_id for e in entries))
            rows = [
                {
                    "project_id": e.project_id,
                    "at": e.at,
                    "src_group": e.src_group,
                    "src_peer": e.src_peer,
                    "src_conn": e.src_conn,
                    "dst_group": e.dst_group,
                    "dst_peer": e.dst_peer,
                    "dst_conn": e.dst_conn,
                    "event": e.event,
                    "path": e.path,
                }
                for e in entries
                if e.project_id in live
            ]
            if rows:
                await conn.execute(insert(connection_log), rows)
        await self._maybe_prune()

    async def record_analytics(self, entries: Sequence[AnalyticsEntry]) -> None:
        async with self._tx() as conn:
            live = await self._live_projects(conn, (e.project_id for e in entries))
            rows = [
                {
                    "project_id": e.project_id,
                    "at": e.at,
                    "src_group": e.src_group,
                    "src_peer": e.src_peer,
                    "dst_group": e.dst_group,
                    "dst_peer": e.dst_peer,
                    "metrics": json.dumps(e.metrics, separators=(",", ":")),
                }
                for e in entries
                if e.project_id in live
            ]
            if rows:
                await conn.execute(insert(analytics), rows)
        await self._maybe_prune()

    async def _maybe_prune(self) -> None:
        now = utcnow()
        last = self._retention.last_pruned
        if last is None or now - last >= self._retention.every:
            await self.prune(now)

    async def prune(self, now: datetime) -> int:
        """Drop connection-log and analytics rows older than their retention; returns the count."""
        self._retention.last_pruned = now
        removed = 0
        async with self._tx() as conn:
            for table, keep in (
                (connection_log, self._retention.connection_log),
                (analytics, self._retention.analytics),
            ):
                result = await conn.execute(delete(table).where(table.c.at < now - keep))
                removed += result.rowcount
        if removed:
            logger.info("pruned %s old connection-log and analytics rows", removed)
        return removed

    # -- queries ---------------------------------------------------------------------------

    async def usage(self, project_id: str, start: date, end: date) -> list[UsageDay]:
        """One row per day from ``start`` to ``end`` inclusive that has any usage."""
        if end < start:
            raise InvalidArgumentError("the usage range ends before it starts (end < start)")
        if (end - start).days >= MAX_USAGE_DAYS:
            raise InvalidArgumentError(f"ask for at most {MAX_USAGE_DAYS} days of usage at once")
        peers = (
            select(usage_peers.c.day, func.count().label("n"))
            .where(usage_peers.c.project_id == project_id)
            .where(usage_peers.c.day.between(start, end))
            .group_by(usage_peers.c.day)
            .subquery()
        )
        query = (
            select(usage_daily, func.coalesce(peers.c.n, 0).label("active_peers"))
            .outerjoin(peers, peers.c.day == usage_daily.c.day)
            .where(usage_daily.c.project_id == project_id)
            .where(usage_daily.c.day.between(start, end))
            .order_by(usage_daily.c.day)
        )
        async with self._read() as conn:
            return [
                UsageDay(
                    project_id=row.project_id,
                    day=row.day,
                    messages=row.messages,
                    peak_streams=row.peak_streams,
                    turn_bytes=row.turn_bytes,
                    turn_packets=row.turn_packets,
                    turn_allocations=row.turn_allocations,
                    active_peers=row.active_peers,
                )
                for row in await conn.execute(query)
            ]

    async def connection_log(
        self, project_id: str, *, before_id: int | None = None, limit: int = 50
    ) -> list[ConnectionLogRow]:
        """Connection-log rows of a project, newest first; page with ``before_id``."""
        check_page_limit(limit)
        query = (
            select(connection_log)
            .where(connection_log.c.project_id == project_id)
            .order_by(connection_log.c.id.desc())
            .limit(limit)
        )
        if before_id is not None:
            query = query.where(connection_log.c.id < before_id)
        async with self._read() as conn:
            return [ConnectionLogRow(**row._asdict()) for row in await conn.execute(query)]

    async def recent_analytics(self, project_id: str, *, limit: int = 50) -> list[AnalyticsEntry]:
        """The newest analytics rows of a project (for debugging a session)."""
        check_page_limit(limit)
        query = (
            select(analytics)
            .where(analytics.c.project_id == project_id)
            .order_by(analytics.c.id.desc())
            .limit(limit)
        )
        async with self._read() as conn:
            return [
                AnalyticsEntry(
                    project_id=row.project_id,
                    at=row.at,
                    src_group=row.src_group,
                    src_peer=row.src_peer,
                    dst_group=row.dst_group,
                    dst_peer=row.dst_peer,
                    metrics=json.loads(row.metrics),
                )
                for row in await conn.execute(query)
            ]
