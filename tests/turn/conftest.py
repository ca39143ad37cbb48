"""Fixtures for the TURN tests: our real server on 127.0.0.1 port 0, credentials, a UDP echo peer,
and a self-signed TLS certificate for 127.0.0.1."""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import pytest

from pulsebeam.config import HostPort, PortRange, TurnConfig
from pulsebeam.turn.credentials import TurnCredential, mint_credential
from pulsebeam.turn.server import TurnServer
from tests.fixtures.tls import write_self_signed

SECRET = b"test-turn-secret"
KID = "kid_0123456789abcdef"
PROJECT = "proj1"

ServerFactory = Callable[..., Awaitable[TurnServer]]


def base_config(**overrides: Any) -> TurnConfig:
    config = TurnConfig(
        listen=HostPort("127.0.0.1", 0),
        relay_ports=PortRange(40000, 49999),
        allow_loopback=True,
    )
    return dataclasses.replace(config, **overrides)


def credential(
    kid: str = KID, project: str = PROJECT, ttl: int = 3600, secret: bytes = SECRET
) -> TurnCredential:
    return mint_credential(secret, kid, project, int(time.time()) + ttl)


@pytest.fixture
def live_keys() -> set[str]:
    return {KID, "kid_aaaaaaaaaaaaaaaa", "kid_bbbbbbbbbbbbbbbb"}


@pytest.fixture
async def make_server(live_keys: set[str]) -> AsyncIterator[ServerFactory]:
    servers: list[TurnServer] = []

    async def factory(tls_context: ssl.SSLContext | None = None, **overrides: Any) -> TurnServer:
        server = TurnServer(
            base_config(**overrides),
            SECRET,
            key_is_live=live_keys.__contains__,
            tls_context=tls_context,
        )
        await server.start()
        servers.append(server)
        return server

    yield factory
    for server in servers:
        await server.stop()


@pytest.fixture
async def turn(make_server: ServerFactory) -> TurnServer:
    return await make_server()


class _Echo(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.received: list[tuple[bytes, tuple[str, int]]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's own datagram transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.received.append((data, (addr[0], addr[1])))
        assert self.transport is not None
        self.transport.sendto(data, addr)


@pytest.fixture
async def echo_peer() -> AsyncIterator[tuple[tuple[str, int], _Echo]]:
    """A UDP peer on 127.0.0.1 that echoes every datagram to its sender."""
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(_Echo, local_addr=("127.0.0.1", 0))
    yield transport.get_extra_info("sockname")[:2], protocol
    transport.close()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate (and key) for IP 127.0.0.1, as PEM files."""
    return write_self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def tls_contexts(tls_files: tuple[Path, Path]) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context trusting the server's certificate)."""
    cert_path, key_path = tls_files
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_path, key_path)
    client = ssl.create_default_context(cafile=str(cert_path))
    return server, client
