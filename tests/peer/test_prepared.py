"""A prepared connection is never torn down mid-gathering (aioice would leak its requests)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiortc import RTCConfiguration, RTCIceServer

from pulsebeam.peer import prepared as prepared_module
from pulsebeam.peer.prepared import PreparedConnection
from tests.peer.conftest import StunResponder

TIMEOUT = 5.0


@pytest.fixture
async def loop_errors() -> list[dict[str, Any]]:
    errors: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, context: errors.append(context))
    return errors


async def test_a_cancelled_waiter_leaves_gathering_alone(
    loopback_ice: RTCConfiguration, stun_server: StunResponder
) -> None:
    stun_server.delay = 0.3
    conn = PreparedConnection(RTCConfiguration([RTCIceServer(stun_server.url)]))
    try:
        waiter = asyncio.create_task(conn.ready())  # a session's worker, say, then closed
        await asyncio.sleep(0.05)
        waiter.cancel()
        async with asyncio.timeout(TIMEOUT):
            await conn.ready()  # not cancelled with the waiter: it still ends normally
        assert conn.gathered
    finally:
        await conn.close()


async def test_a_close_during_gathering_waits_for_it_then_closes_in_the_background(
    loopback_ice: RTCConfiguration,
    stun_server: StunResponder,
    monkeypatch: pytest.MonkeyPatch,
    loop_errors: list[dict[str, Any]],
) -> None:
    monkeypatch.setattr(prepared_module, "GATHERING_GRACE", 0.1)
    stun_server.delay = 0.5  # gathering outlasts the grace
    conn = PreparedConnection(RTCConfiguration([RTCIceServer(stun_server.url)]))
    await asyncio.sleep(0.05)
    await conn.close()  # returns after the grace, gathering still on
    assert not conn.gathered
    assert conn.pc.signalingState != "closed"
    async with asyncio.timeout(TIMEOUT):
        await conn.ready()  # gathering was let finish: the STUN server's answer came
        while conn.pc.signalingState != "closed":  # noqa: ASYNC110 - no event for it
            await asyncio.sleep(0.01)
    assert stun_server.requests >= 1
    await asyncio.sleep(0.6)  # past a STUN retransmission: nothing runs on closed sockets
    pending = [t for t in asyncio.all_tasks() if "reflexive" in repr(t.get_coro())]
    assert pending == []
    assert loop_errors == []
