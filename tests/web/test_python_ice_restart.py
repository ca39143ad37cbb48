"""A Python peer's ICE restart, seen by the browser SDK in Chromium.

The Python peer (tests/web/python_bot.py) relays through our TURN; once it has echoed "ping 1",
its ICE path is cut (its aioice connection closed, as when a network goes away). It restarts
on a new RTCPeerConnection under generation 1 (pulsebeam.peer.restart); the browser SDK takes
the higher generation's offer on its existing connection (new ICE credentials, a new DTLS
handshake, a new SCTP association) and the chat goes on over the same channels.
"""

from __future__ import annotations

import queue
import subprocess
import sys
import threading

import pytest
from playwright.sync_api import expect

from tests.fixtures.server import ProjectKeys, RunningServer
from tests.web.test_demo_browser import BOT, Browser

pytestmark = pytest.mark.slow


def test_python_peer_restarts_ice_with_a_browser(
    browser: Browser, app_url: str, web_server: RunningServer, keys: ProjectKeys
) -> None:
    token = keys.token("py2", "bot", policy="py2:*")
    command = [sys.executable, str(BOT), "--base-url", web_server.grpc, "--token", token]
    with subprocess.Popen(
        [*command, "--break-on", "ping 1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as bot:
        assert bot.stdout is not None
        assert bot.stdin is not None
        lines: queue.Queue[str] = queue.Queue()
        stdout = bot.stdout

        def pump() -> None:
            for line in stdout:
                lines.put(line.strip())

        threading.Thread(target=pump, daemon=True).start()

        def wait_line(wanted: str) -> list[str]:
            seen: list[str] = []
            while (line := lines.get(timeout=30)) != wanted:
                seen.append(line)
            return seen

        try:
            wait_line("READY bot")
            alice = browser(app_url)
            alice.sign_in("alice", "py2")
            alice.wait_connected("bot")
            alice.say("ping 1")
            expect(alice.chat_line("bot: echo: ping 1")).to_be_visible()
            before = wait_line("STATE connected 1")  # failed, then connected at generation 1
            assert "BROKE alice" in before
            assert "STATE failed 0" in before
            alice.say("ping 2")
            expect(alice.chat_line("bot: echo: ping 2")).to_be_visible()
            expect(alice.peer("bot")).to_contain_text("connected")
        finally:
            bot.stdin.close()
            bot.wait(timeout=30)
