"""The demo page and the browser SDK in real Chromium against the real server: two browsers chat
relay-only through our TURN, a video call plays remote frames, a browser and a Python peer talk
over a data channel, and bad tokens, policy refusals and an unreachable server read as plain
words. Screenshots go to artifacts/screenshots/demo/."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import expect

from examples.app_server import Settings
from pulsebeam import AccessToken, KeyPair, PeerClaims, PeerPolicy
from tests.fixtures.server import ProjectKeys, RunningServer
from tests.web.conftest import AppServer, closed_port, recent_analytics
from tests.web.demo_page import WAIT_MS, DemoPage

pytestmark = pytest.mark.slow

Browser = Callable[[str], DemoPage]
BOT = Path(__file__).with_name("python_bot.py")


def test_two_browsers_chat_relay_only_through_our_turn(
    browser: Browser, app_url: str, web_server: RunningServer, keys: ProjectKeys
) -> None:
    assert web_server.turn is not None
    turn_port = web_server.turn.rpartition(":")[2]
    alice, bob = browser(app_url), browser(app_url)
    alice.sign_in("alice", "chat1")
    bob.sign_in("bob", "chat1")
    alice.wait_connected("bob")
    bob.wait_connected("alice")

    for me, other in ((alice, "bob"), (bob, "alice")):
        path = me.wait_path(other)
        expect(path).to_have_attribute("data-path", "relay")
        # Relayed by our own TURN server, not by any other.
        expect(path).to_have_attribute("title", re.compile(rf"127\.0\.0\.1:{turn_port}"))
        expect(me.rtt(other)).to_have_text(re.compile(r"^\d+ ms$"))

    alice.say("hello bob")
    expect(bob.chat_line("alice: hello bob")).to_be_visible()
    bob.say("hi alice, loud and clear")
    expect(alice.chat_line("bob: hi alice, loud and clear")).to_be_visible()
    alice.screenshot("chat-alice")
    bob.screenshot("chat-bob")

    # Each SDK reported its path and RTT through AnalyticsReport (relay over UDP or TCP to the
    # TURN server: codes 3 and 4).
    deadline = time.monotonic() + 15
    while True:
        reports = [
            entry.metrics
            for entry in recent_analytics(web_server, keys.project_id)
            if (entry.src_group, entry.src_peer, entry.dst_peer) == ("chat1", "alice", "bob")
        ]
        if reports or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert reports, "no analytics from alice about bob"
    assert reports[0]["ice_connection_type"] in (3, 4)
    assert 0 <= reports[0]["rtt_us"] < 5_000_000

    # Closing the tab says Bye: alice sees bob leave at once, not after an ICE timeout.
    bob.page.close(run_before_unload=True)
    expect(alice.peer("bob")).to_have_count(0, timeout=5000)


def test_video_call_plays_remote_frames(browser: Browser, app_url: str) -> None:
    alice, bob = browser(app_url), browser(app_url)
    alice.sign_in("alice", "video1")
    bob.sign_in("bob", "video1")
    alice.wait_connected("bob")

    alice.page.click("#start-video")
    bob.page.click("#start-video")
    for me, other in ((bob, "alice"), (alice, "bob")):
        video = me.remote_video(other)
        expect(video).to_have_count(1)
        me.page.wait_for_function(
            "v => v.videoWidth > 0 && v.currentTime > 0", arg=video.element_handle()
        )
        before = me.video_frames(other)
        me.page.wait_for_timeout(1000)
        assert me.video_frames(other) > before, "the remote video is not playing"
    bob.screenshot("video-bob")
    alice.screenshot("video-alice")


def test_browser_and_python_peer_chat_over_a_data_channel(
    browser: Browser, app_url: str, web_server: RunningServer, keys: ProjectKeys
) -> None:
    token = keys.token("py1", "bot", policy="py1:*")
    with subprocess.Popen(
        [sys.executable, str(BOT), "--base-url", web_server.grpc, "--token", token],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as bot:
        assert bot.stdout is not None
        assert bot.stdin is not None
        try:
            assert bot.stdout.readline().strip() == "READY bot"
            alice = browser(app_url)
            alice.sign_in("alice", "py1")
            alice.wait_connected("bot")
            expect(alice.wait_path("bot")).to_have_attribute("data-path", "relay")
            # A channel the Python side opened, and an answer on the one the browser opened.
            expect(alice.chat_line("bot: hello from python")).to_be_visible()
            alice.say("ping 1")
            expect(alice.chat_line("bot: echo: ping 1")).to_be_visible()
            alice.screenshot("chat-with-python")
        finally:
            bot.stdin.close()
            output = bot.stdout.read()
            bot.wait(timeout=30)
    assert "PATH relay" in output
    assert "GOT ping 1" in output


def test_connect_waits_for_a_callee_that_is_not_online_yet(browser: Browser, app_url: str) -> None:
    """The official SDK closes the peer on NOT_FOUND; ours keeps sending Join until bob comes."""
    alice = browser(app_url)
    alice.sign_in("alice", "wait1")
    expect(alice.page.locator("#status")).to_have_text("connected")
    joins: list[str] = []
    alice.page.on("request", lambda r: joins.append(r.url) if r.url.endswith("/Send") else None)
    alice.page.evaluate(
        """() => {
            window.call = { state: "pending" };
            demo.peer.connect("wait1", "bob", AbortSignal.timeout(25000)).then(
                (s) => Object.assign(window.call, { state: "connected", peer: s.other.peerId }),
                (e) => Object.assign(window.call, { state: "failed", error: String(e) }),
            );
        }"""
    )
    alice.page.wait_for_timeout(2500)
    assert alice.page.evaluate("window.call.state") == "pending"
    assert len(joins) >= 2, "connect() did not keep sending Join"
    assert alice.page.locator("#status").inner_text() == "connected"

    bob = browser(app_url)
    bob.sign_in("bob", "wait1")
    alice.page.wait_for_function("window.call.state !== 'pending'")
    assert alice.page.evaluate("window.call") == {"state": "connected", "peer": "bob"}
    alice.wait_connected("bob")


def test_a_session_outlives_the_first_token(
    browser: Browser,
    web_server: RunningServer,
    keys: ProjectKeys,
    app_servers: Callable[[Settings], AppServer],
) -> None:
    """Tokens live 6 s here; the page's token provider refreshes them, so signaling for alice
    still works (bob can reach her) after her first token expired."""
    short = app_servers(Settings(web_server.url, keys.api_key, keys.api_secret, token_ttl=6))
    alice = browser(short.url)
    alice.sign_in("alice", "refresh1")
    expect(alice.page.locator("#status")).to_have_text("connected")
    alice.page.wait_for_timeout(8000)
    bob = browser(short.url)
    bob.sign_in("bob", "refresh1")
    alice.wait_connected("bob")
    expect(alice.page.locator("#status")).to_have_text("connected")
    expect(alice.error()).to_be_hidden()


def test_errors_read_as_plain_words(
    browser: Browser,
    app_url: str,
    web_server: RunningServer,
    keys: ProjectKeys,
    app_servers: Callable[[Settings], AppServer],
) -> None:
    page = browser(app_url)

    # A token signed by a key this server does not know.
    stranger = KeyPair.generate()
    claims = PeerClaims("room1", "mallory")
    claims.set_allow_policy(PeerPolicy("*", "*"))
    page.use_token(AccessToken(stranger.api_key, stranger.api_secret).create_token(claims, 60))
    expect(page.error()).to_contain_text("Your token was refused")
    expect(page.error()).to_contain_text(stranger.api_key)
    page.screenshot("error-unknown-key")

    # Not a token at all: refused before any network call.
    page.use_token("not-a-token")
    expect(page.error()).to_contain_text("Your token was refused")
    expect(page.error()).to_contain_text("not a PulseBeam token")

    # An expired token of a real key.
    expired = keys.token("room1", "late", ttl=1)
    time.sleep(2.1)
    page.use_token(expired)
    expect(page.error()).to_contain_text("Your sign-in has expired")
    page.screenshot("error-expired")

    # The signaling server unreachable once the SDK is loaded (requests fail at the network).
    page.page.route("**/grpc/**", lambda route: route.abort("connectionrefused"))
    page.sign_in("carol", "room1")
    expect(page.error()).to_contain_text("Cannot reach the server")
    expect(page.error()).to_contain_text("cannot reach the signaling server")
    page.page.unroute("**/grpc/**")

    # A policy refusal: the demo's tokens reach only their own room.
    page.page.reload()
    page.sign_in("carol", "policy1")
    expect(page.page.locator("#status")).to_have_text("connected")
    page.page.fill("#call-target", "elsewhere/dave")
    page.page.click("#call-btn")
    expect(page.error()).to_contain_text("Not allowed by the token's policy")
    expect(page.error()).to_contain_text("elsewhere/dave")
    page.screenshot("error-policy")

    # An app whose PulseBeam server is down; and a wrong password first.
    down = app_servers(
        Settings(
            f"http://127.0.0.1:{closed_port()}",
            keys.api_key,
            keys.api_secret,
            demo_password="s3cret",
        )
    )
    other = browser(down.url)
    other.sign_in("erin", "room1", password="wrong")
    expect(other.error()).to_contain_text("Sign-in failed")
    expect(other.error()).to_contain_text("wrong name or password")
    other.sign_in("erin", "room1", password="s3cret")
    expect(other.error()).to_contain_text("Cannot reach the server", timeout=WAIT_MS)
    other.screenshot("error-unreachable")
