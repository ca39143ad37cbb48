"""Fixtures of the peer SDK tests: loopback-only ICE and a two-session in-process wire."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import cast

import aioice.ice
import pytest
from aioice import stun
from aiortc import RTCConfiguration

from pulsebeam.peer import Peer
from tests.fixtures.server import (  # noqa: F401 - plugin fixtures used by the tests here
    ProjectKeys,
    RunningServer,
    create_project,
    pulsebeam_project,
    pulsebeam_server,
    start_server,
)
from tests.peer.remote import Agent

# Our TURN on a free loopback port, allowed to relay to loopback peers (tests only); streams end
# exactly at token expiry (no leeway), so the token-refresh test stays short.
SERVER_ARGS = (
    "--turn-enabled",
    "--turn",
    "127.0.0.1:0",
    "--turn-allow-loopback",
    "--token-leeway",
    "0",
)


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with (
        tempfile.TemporaryDirectory(prefix="pulsebeam-peer-") as tmp,
        start_server(Path(tmp), *SERVER_ARGS) as running,
    ):
        yield running


@pytest.fixture
def keys(server: RunningServer) -> ProjectKeys:
    return create_project(server)


@pytest.fixture
async def agents() -> AsyncIterator[list[Agent]]:
    """Remote peer processes, stopped at the end of the test."""
    started: list[Agent] = []
    yield started
    for agent in started:
        await agent.stop()


@pytest.fixture
async def peers() -> AsyncIterator[list[Peer]]:
    """Peers of this process, closed at the end of the test."""
    made: list[Peer] = []
    yield made
    for peer in made:
        await peer.close()


@pytest.fixture
def loopback_ice(monkeypatch: pytest.MonkeyPatch) -> RTCConfiguration:
    """Host candidates on 127.0.0.1 only and no ICE server at all: nothing leaves loopback."""
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])
    return RTCConfiguration(iceServers=[])


class StunResponder(asyncio.DatagramProtocol):
    """A STUN server on loopback answering Binding requests after ``delay`` seconds."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.requests = 0
        self.answered_at: list[float] = []  # loop times
        self.transport: asyncio.DatagramTransport | None = None

    @property
    def url(self) -> str:
        assert self.transport is not None
        return f"stun:127.0.0.1:{self.transport.get_extra_info('sockname')[1]}"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        request = stun.parse_message(data)
        self.requests += 1
        response = stun.Message(
            message_method=stun.Method.BINDING,
            message_class=stun.Class.RESPONSE,
            transaction_id=request.transaction_id,
        )
        response.attributes["XOR-MAPPED-ADDRESS"] = addr
        asyncio.get_running_loop().call_later(self.delay, self._answer, bytes(response), addr)

    def _answer(self, response: bytes, addr: tuple[str, int]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.answered_at.append(asyncio.get_running_loop().time())
            self.transport.sendto(response, addr)


@pytest.fixture
async def stun_server() -> AsyncIterator[StunResponder]:
    """A loopback STUN server; set ``delay`` to make gathering take that long."""
    loop = asyncio.get_running_loop()
    transport, responder = await loop.create_datagram_endpoint(
        StunResponder, local_addr=("127.0.0.1", 0)
    )
    yield responder
    transport.close()
