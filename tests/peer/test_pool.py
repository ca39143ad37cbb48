"""The connection pool on real aiortc: spares gathered ahead, handed out once, replaced, closed."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiortc import RTCConfiguration, RTCIceServer

from pulsebeam.peer import pool as pool_module
from pulsebeam.peer.pool import ConnectionPool
from pulsebeam.peer.prepared import PreparedConnection
from tests.peer.conftest import StunResponder

TIMEOUT = 5.0


async def closed(conn: PreparedConnection) -> None:
    while conn.pc.signalingState != "closed":  # noqa: ASYNC110 - aiortc has no event for it
        await asyncio.sleep(0.01)


async def refilled(pool: ConnectionPool, size: int) -> tuple[PreparedConnection, ...]:
    while len(pool.spares) < size:  # noqa: ASYNC110 - the pool has no event for it
        await asyncio.sleep(0.01)
    return pool.spares


async def test_a_spare_is_gathered_ahead_and_replaced_after_it_is_taken(
    loopback_ice: RTCConfiguration,
) -> None:
    pool = ConnectionPool(1, loopback_ice)
    assert pool.take() is None  # not started: no spares
    pool.start()
    try:
        async with asyncio.timeout(TIMEOUT):
            (spare,) = pool.spares
            await spare.ready()
            assert spare.gathered
            assert pool.take() is spare
            assert pool.take() is None  # the next one is made a moment later
            (second,) = await refilled(pool, 1)
            assert second is not spare
            await spare.close()
    finally:
        await pool.close()


async def test_takes_that_find_no_spare_do_not_put_the_refill_off(
    loopback_ice: RTCConfiguration,
) -> None:
    pool = ConnectionPool(1, loopback_ice)
    pool.start()
    taken: list[PreparedConnection] = []
    try:
        first = pool.take()
        assert first is not None
        taken.append(first)
        async with asyncio.timeout(TIMEOUT):
            while (spare := pool.take()) is None:  # noqa: ASYNC110 - a take every 10 ms
                await asyncio.sleep(0.01)
        taken.append(spare)
    finally:
        for conn in taken:
            await conn.close()
        await pool.close()


async def test_spares_are_replaced_when_stale_or_reconfigured_and_closed_with_the_pool(
    loopback_ice: RTCConfiguration, stun_server: StunResponder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pool_module, "SPARE_MAX_AGE", 0.3)
    pool = ConnectionPool(2, loopback_ice)
    pool.start()
    try:
        async with asyncio.timeout(TIMEOUT):
            first = pool.spares
            assert len(first) == 2
            for old in first:  # stale after SPARE_MAX_AGE: closed and replaced
                await closed(old)
            aged = await refilled(pool, 2)
            assert not set(aged) & set(first)
            # New ICE servers (new TURN credentials, say): the spares gather with them.
            assert stun_server.requests == 0
            pool.reconfigure(RTCConfiguration([RTCIceServer(stun_server.url)]))
            for old in aged:
                await closed(old)
            current = await refilled(pool, 2)
            for conn in current:
                await conn.ready()
            assert stun_server.requests >= 2  # one Binding request per spare at least
    finally:
        await pool.close()
    for conn in current:
        assert conn.pc.signalingState == "closed"
    assert pool.take() is None


async def test_an_empty_pool_makes_nothing(loopback_ice: RTCConfiguration) -> None:
    pool = ConnectionPool(0, loopback_ice)
    pool.start()
    assert pool.take() is None
    assert pool.spares == ()
    await pool.close()


async def test_a_pool_started_before_its_configuration_waits_for_it(
    loopback_ice: RTCConfiguration,
) -> None:
    """A peer started before Prepare has answered: no spare until the ICE servers are known,
    then one at once, in time for the session that its held messages start."""
    pool = ConnectionPool(1)
    pool.start()
    try:
        cpu = time.process_time()
        await asyncio.sleep(0.2)  # the maintaining task waits for a configuration, idle
        assert time.process_time() - cpu < 0.1  # (a loop spinning on a zero timeout: ~0.2 s)
        assert pool.spares == ()
        assert pool.take() is None
        pool.reconfigure(loopback_ice)
        (spare,) = pool.spares  # made inside reconfigure, not a loop turn later
        async with asyncio.timeout(TIMEOUT):
            await spare.ready()
        assert pool.take() is spare
    finally:
        await pool.close()
    await spare.close()
    # Closed for good: a configuration that comes late (Prepare answering a peer that has
    # closed meanwhile) makes no spare that nobody would close.
    pool.reconfigure(loopback_ice)
    pool.start()
    assert pool.spares == ()
