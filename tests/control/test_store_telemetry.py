"""Batched usage, connection-log and analytics writes, and their queries (both backends)."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest

from pulsebeam.control.base import utcnow
from pulsebeam.control.records import AnalyticsEntry, ConnectionLogEntry, UsageDelta
from pulsebeam.control.store import Store
from pulsebeam.control.views import Actor
from pulsebeam.errors import InvalidArgumentError

from .helpers import new_account

DAY = date(2026, 3, 1)


async def _project(store: Store, name: str = "P") -> str:
    account = await store.find_account("owner@example.com")
    if account is None:
        account, _ = await new_account(store, "owner@example.com")
    return (await store.create_project(name, account.id, Actor.admin_cli())).id


def _conn(project_id: str, at: datetime, peer: str = "alice") -> ConnectionLogEntry:
    return ConnectionLogEntry(project_id, at, "room", peer, 100, "room", "bob", 200, "join")


async def test_usage_sums_maxes_and_counts_distinct_peers(store: Store) -> None:
    pid = await _project(store)
    await store.record_usage(
        [
            UsageDelta(pid, DAY, messages=5, peak_streams=3, peers=frozenset({("g", "a")})),
            # the same project and day twice in one batch: folded before the upsert
            UsageDelta(pid, DAY, messages=2, peak_streams=7, turn_bytes=10, turn_packets=1),
            UsageDelta(pid, DAY + timedelta(days=1), turn_allocations=2),
            UsageDelta("prj_0000000000000000", DAY, messages=99),  # unknown project: dropped
        ]
    )
    await store.record_usage(
        [
            UsageDelta(
                pid, DAY, messages=1, peak_streams=4, peers=frozenset({("g", "a"), ("g", "b")})
            )
        ]
    )
    days = await store.usage(pid, DAY, DAY + timedelta(days=5))
    assert [(d.day, d.messages, d.peak_streams, d.active_peers) for d in days] == [
        (DAY, 8, 7, 2),
        (DAY + timedelta(days=1), 0, 0, 0),
    ]
    assert (days[0].turn_bytes, days[0].turn_packets, days[1].turn_allocations) == (10, 1, 2)
    assert await store.usage(pid, DAY + timedelta(days=2), DAY + timedelta(days=3)) == []
    assert await store.usage("prj_0000000000000000", DAY, DAY) == []
    with pytest.raises(InvalidArgumentError, match="end < start"):
        await store.usage(pid, DAY, DAY - timedelta(days=1))
    with pytest.raises(InvalidArgumentError, match="at most"):
        await store.usage(pid, DAY, DAY + timedelta(days=400))
    await store.record_usage([])


async def test_usage_counters_hold_big_numbers(store: Store) -> None:
    pid = await _project(store)
    big = 3 * 2**40  # TURN byte counts exceed 32 bits within a day
    await store.record_usage([UsageDelta(pid, DAY, turn_bytes=big)] * 2)
    assert (await store.usage(pid, DAY, DAY))[0].turn_bytes == 2 * big


async def test_mark_keys_used_never_goes_back(store: Store) -> None:
    pid = await _project(store)
    key = (await store.create_key(pid, "", Actor.admin_cli())).key
    later, earlier = utcnow(), utcnow() - timedelta(hours=1)
    await store.mark_keys_used({key.kid: later, "kid_0000000000000000": later})
    await store.mark_keys_used({key.kid: earlier})
    assert (await store.list_project_keys(pid))[0].last_used_at == later
    await store.mark_keys_used({})


async def test_connection_log_pages_newest_first(store: Store) -> None:
    pid = await _project(store)
    other = await _project(store, "Other")
    now = utcnow()
    await store.record_connections(
        [_conn(pid, now, f"p{i}") for i in range(7)]
        + [_conn(other, now, "x"), _conn("prj_0000000000000000", now)]
    )
    page1 = await store.connection_log(pid, limit=3)
    page2 = await store.connection_log(pid, before_id=page1[-1].id, limit=3)
    page3 = await store.connection_log(pid, before_id=page2[-1].id, limit=3)
    peers = [r.src_peer for r in page1 + page2 + page3]
    assert peers == [f"p{i}" for i in reversed(range(7))]
    assert page1[0].src_conn == 100
    assert page1[0].dst_conn == 200
    assert [r.src_peer for r in await store.connection_log(other)] == ["x"]
    await store.record_connections([])


async def test_logs_are_bounded_in_time(store: Store) -> None:
    pid = await _project(store)
    now = utcnow()
    metrics = {"rtt_us": 1500, "ice_connection_type": 2}
    # The first write of a store prunes at once; later ones at most hourly.
    await store.record_connections([_conn(pid, now - timedelta(days=31), "old"), _conn(pid, now)])
    assert [r.src_peer for r in await store.connection_log(pid)] == ["alice"]
    await store.record_analytics(
        [
            AnalyticsEntry(pid, now - timedelta(days=8), "g", "a", "g", "b", {"rtt_us": 1}),
            AnalyticsEntry(pid, now, "g", "a", "g", "b", metrics),
            AnalyticsEntry("prj_0000000000000000", now, "g", "a", "g", "b", metrics),
        ]
    )
    assert len(await store.recent_analytics(pid)) == 2
    assert await store.prune(now) == 1
    assert [a.metrics for a in await store.recent_analytics(pid)] == [metrics]
