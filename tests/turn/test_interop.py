"""Interop with clients no one here wrote: coturn's turnutils_uclient (UDP, TCP, TLS, Send
indications) and turnutils_stunclient against our server, with credentials from the provider
that signaling's ``Prepare`` uses."""

from __future__ import annotations

import asyncio
import re
import shutil
import ssl

import pytest

from pulsebeam.config import HostPort
from pulsebeam.turn.credentials import IceServerProvider
from pulsebeam.turn.server import TurnServer
from tests.turn.conftest import KID, PROJECT, SECRET, ServerFactory

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("turnutils_uclient") is None, reason="coturn's tools are not installed"
    ),
]

Peer = tuple[tuple[str, int], object]


async def _run(*argv: str) -> str:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), 60.0)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    return out.decode(errors="replace")


def _prepare_credential(server: TurnServer) -> tuple[str, str]:
    assert server.udp_address is not None
    provider = IceServerProvider(SECRET, host="127.0.0.1", port=server.udp_address[1])
    _, turn = provider.ice_servers(KID, PROJECT, 2_000_000_000)
    assert turn.username is not None
    assert turn.credential is not None
    return turn.username, turn.credential


@pytest.mark.parametrize(
    ("flags", "length"),
    [
        ((), 120),  # UDP, ChannelData
        (("-s",), 100),  # UDP, Send and Data indications
        (("-t",), 121),  # TCP, ChannelData with stream padding (odd length)
        (("-t", "-S"), 100),  # TLS
    ],
)
async def test_uclient_relays_without_loss(
    make_server: ServerFactory,
    echo_peer: Peer,
    tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext],
    flags: tuple[str, ...],
    length: int,
) -> None:
    turn = await make_server(tls_context=tls_contexts[0], tls_listen=HostPort("127.0.0.1", 0))
    assert turn.udp_address is not None
    assert turn.tls_address is not None
    port = turn.tls_address[1] if "-S" in flags else turn.udp_address[1]
    username, password = _prepare_credential(turn)
    peer, echo = echo_peer
    messages, clients = 40, 2
    out = await _run(
        "turnutils_uclient",
        *flags,
        "-c",  # no RTCP allocations (they need port reservations, which we do not offer)
        "-e", peer[0], "-r", str(peer[1]),
        "-p", str(port),
        "-u", username, "-w", password,
        "-n", str(messages), "-m", str(clients), "-l", str(length), "-z", "5",
        "127.0.0.1",
    )  # fmt: skip
    total = messages * clients
    assert f"tot_send_msgs={total}, tot_recv_msgs={total}" in out, out[-2000:]
    assert "Total lost packets 0 (0.000000%)" in out, out[-2000:]
    assert len(echo.received) >= total  # type: ignore[attr-defined]
    (usage,) = turn.drain_usage()
    assert usage.turn_packets >= 2 * total
    assert usage.turn_allocations >= clients


async def test_stunclient_binding(turn: TurnServer) -> None:
    assert turn.udp_address is not None
    out = await _run("turnutils_stunclient", "-p", str(turn.udp_address[1]), "127.0.0.1")
    match = re.search(r"UDP reflexive addr: 127\.0\.0\.1:(\d+)", out)
    assert match is not None, out
    assert 0 < int(match.group(1)) < 65536
