"""ICE restart on failure: a relayed session whose TURN server restarts recovers by itself.

Alice (this process) and bob (another process) relay only, through the TURN of a real server.
The server process is stopped, which takes every TURN allocation with it, and started again on
the same HTTP and TURN ports. Both sessions see their path fail, replace their connection
(pulsebeam.peer.restart) and renegotiate under generation 1 through the new server; the same
Session and DataChannel objects carry the messages again. aioice checks consent every 5 s and
fails a path after 6 misses; both processes check every 0.5 s here to keep the test short.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from urllib.parse import urlsplit

import aioice.ice
import pytest

from pulsebeam.peer import DataChannel, Peer, create_peer
from tests.fixtures.server import ProjectKeys, RunningServer, create_project, start_server
from tests.peer.remote import Agent

pytestmark = pytest.mark.slow

CONSENT_INTERVAL = 0.5
TIMEOUT = 25.0


async def echo_round(channel: DataChannel, tag: str, count: int = 20) -> None:
    for i in range(count):
        channel.send(f"{tag}-{i}")
    assert [await channel.receive() for _ in range(count)] == [f"{tag}-{i}" for i in range(count)]


async def test_relayed_session_recovers_when_the_turn_server_restarts(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    agents: list[Agent],
    peers: list[Peer],
) -> None:
    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", CONSENT_INTERVAL)
    with contextlib.ExitStack() as stack:
        first = stack.enter_context(
            start_server(tmp_path, "--turn-enabled", "--turn-allow-loopback")
        )
        assert first.turn is not None
        http_port, turn_port = urlsplit(first.url).port, first.turn.rpartition(":")[2]
        keys: ProjectKeys = await asyncio.to_thread(create_project, first)
        bob = await Agent.start(
            first.grpc,
            keys,
            "bob",
            "--force-relay",
            "--consent-interval",
            str(CONSENT_INTERVAL),
        )
        agents.append(bob)
        alice = await create_peer(keys.token("g1", "alice"), first.grpc, force_relay=True)
        peers.append(alice)
        async with asyncio.timeout(TIMEOUT):
            session = await alice.connect("g1", "bob")
            states = session.connection_states()
            chat = session.create_data_channel("chat")
            await chat.wait_open()
            await echo_round(chat, "before")
            assert session.path == "relay"
            assert (session.generation, session.ice_restarts) == (0, 0)

            assert await asyncio.to_thread(first.stop) == 0  # the allocations die with it
            second: RunningServer = await asyncio.to_thread(
                stack.enter_context,
                start_server(
                    tmp_path,
                    "--turn-enabled",
                    "--turn",
                    f"127.0.0.1:{turn_port}",
                    "--turn-allow-loopback",
                    "--http",
                    f"127.0.0.1:{http_port}",
                ),
            )
            assert (second.url, second.turn) == (first.url, first.turn)

            seen: list[str] = []
            async for state in states:
                seen.append(state)
                if "failed" in seen and state == "connected":
                    break
            await chat.wait_open()  # the same object, bound to the new connection's channel
            await echo_round(chat, "after")  # bob's echo loop is on its own rebound channel
            assert session.path == "relay"
            # Bob's session went through the same: failed, then connected again.
            while True:
                event = await bob.expect("state")
                if event["state"] == "connected" and event["generation"] >= 1:
                    break
        assert not session.closed
        assert session.generation >= 1
        assert alice.session_with("g1", "bob") is session
        assert alice.error is None
        assert any(e["event"] == "state" and e["state"] == "failed" for e in bob.events)
        assert [e["event"] for e in bob.events].count("channel") == 1  # rebound, not a new one
        # While the server runs: closing frees the TURN allocations instead of retrying for 3 s.
        await alice.close()
        assert await bob.stop() == 0
