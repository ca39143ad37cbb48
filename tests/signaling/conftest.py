"""Fixtures for the signaling tests: one real server for the module, a fresh project per test,
and gRPC-Web clients holding minted tokens."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.fixtures.server import (
    ProjectKeys,
    RunningServer,
    create_project,
    server_args,
    start_server,
)
from tests.signaling.grpcweb_client import Client

# Small limits so each rule is quick to reach; each test gets its own project (the caps and
# rate limits are per project or per peer of a project).
SERVER_SETTINGS = {
    "ice_servers": "stun:127.0.0.1:3478",
    "ping_interval": "1",
    "max_project_streams": "6",
    "max_streams_per_peer": "3",
    "send_rate": "5",
    "send_burst": "20",
    "recv_rate": "1",
    "recv_burst": "8",
    "analytics_rate": "1",
    "analytics_burst": "5",
    "token_leeway": "0",
    "records_flush": "0.3",
    "max_message_bytes": "10240",
}


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with (
        tempfile.TemporaryDirectory(prefix="pulsebeam-sig-") as tmp,
        start_server(Path(tmp), *server_args(**SERVER_SETTINGS), "--log-json") as running,
    ):
        yield running


@pytest.fixture
def project(server: RunningServer) -> ProjectKeys:
    return create_project(server)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


ClientFactory = Callable[..., Client]


@pytest.fixture
def client(server: RunningServer, project: ProjectKeys, http: httpx.AsyncClient) -> ClientFactory:
    """``client(group, peer, policy="*:*", ttl=3600)`` -> a Client with a fresh token."""

    def make(group: str, peer: str, policy: str = "*:*", ttl: int = 3600) -> Client:
        return Client(http, server.grpc, project.token(group, peer, policy, ttl))

    return make
