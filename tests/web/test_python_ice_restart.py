"""ICE restarts between a Python peer and the browser SDK in Chromium, each side first.

The Python peer (tests/web/python_bot.py) relays through our TURN. Once it has echoed "ping 1":

- its ICE path is cut (its aioice connection closed, as when a network goes away). It restarts
  on a new RTCPeerConnection under generation 1 (pulsebeam.peer.restart); the browser SDK takes
  the higher generation's offer on its existing connection (new ICE credentials, a new DTLS
  handshake, a new SCTP association) and the chat goes on over the same channels;
- or it stops taking anything from its path without noticing, so the browser's ICE fails first
  (Chromium gave up ~16 s after the mute here) and the browser SDK restarts ICE on its
  connection under generation 1; the Python peer answers that offer on a new connection (aiortc
  cannot take new ICE credentials on a live one), with a new DTLS fingerprint that the browser
  takes in the answer, and the chat goes on.
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


@pytest.mark.parametrize("fault", ["--break-on", "--mute-on"])
def test_ice_restart_between_python_and_a_browser(
    browser: Browser, app_url: str, web_server: RunningServer, keys: ProjectKeys, fault: str
) -> None:
    room = "py2" if fault == "--break-on" else "py3"
    token = keys.token(room, "bot", policy=f"{room}:*")
    command = [sys.executable, str(BOT), "--base-url", web_server.grpc, "--token", token]
    with subprocess.Popen(
        [*command, fault, "ping 1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
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
            while (line := lines.get(timeout=60)) != wanted:
                seen.append(line)
            return seen

        try:
            wait_line("READY bot")
            alice = browser(app_url)
            alice.sign_in("alice", room)
            alice.wait_connected("bot")
            alice.say("ping 1")
            expect(alice.chat_line("bot: echo: ping 1")).to_be_visible()
            before = wait_line("STATE connected 1")  # connected again at generation 1
            if fault == "--break-on":
                assert "BROKE alice" in before
                assert "STATE failed 0" in before  # the Python side failed, and restarted
            else:
                assert "MUTED alice" in before
                assert not [line for line in before if line.startswith("STATE failed")]
            alice.say("ping 2")
            expect(alice.chat_line("bot: echo: ping 2")).to_be_visible()
            expect(alice.peer("bot")).to_contain_text("connected")
        finally:
            bot.stdin.close()
            bot.wait(timeout=30)
