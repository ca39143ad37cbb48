"""Drives the demo page in Chromium for the browser tests: launching browsers with the flags of
shared/DESIGN.md, signing in, reading who is there, chatting, and saving screenshots."""

from __future__ import annotations

import re
from pathlib import Path

from playwright.sync_api import BrowserContext, Locator, Page, Playwright, expect

from tests.fixtures.chromium import CHROMIUM, CHROMIUM_FLAGS

SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots" / "demo"
WAIT_MS = 30_000


def launch(playwright: Playwright, profile: Path) -> BrowserContext:
    """A Chromium of its own with a fresh profile directory (one per simulated user)."""
    profile.mkdir(parents=True, exist_ok=True)
    context = playwright.chromium.launch_persistent_context(
        str(profile), executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True
    )
    context.set_default_timeout(WAIT_MS)
    return context


class DemoPage:
    """One user of the demo page."""

    def __init__(self, context: BrowserContext, app_url: str) -> None:
        self.page: Page = context.new_page()
        self.console: list[str] = []
        self.page.on("console", lambda message: self.console.append(message.text))
        # ?debug: the SDK logs its protocol steps to the console, which failures then show.
        self.page.goto(f"{app_url}?debug")

    def sign_in(self, name: str, room: str, *, password: str = "", relay: bool = True) -> None:
        self.page.fill("#name", name)
        self.page.fill("#password", password)
        self.page.fill("#room", room)
        self.page.set_checked("#relay", relay)
        self.page.click("#login-btn")

    def use_token(self, token: str) -> None:
        self.page.locator("#signin details").evaluate("details => { details.open = true; }")
        self.page.fill("#token-input", token)
        self.page.click("#token-btn")

    def peer(self, name: str) -> Locator:
        return self.page.locator(f'#peers li[data-peer="{name}"]')

    def wait_connected(self, name: str) -> None:
        try:
            expect(self.peer(name).locator(".state")).to_have_text("connected", timeout=WAIT_MS)
        except AssertionError as exc:
            log = "\n".join(self.console[-80:])
            raise AssertionError(f"{exc}\n--- browser console ---\n{log}") from exc

    def wait_path(self, name: str) -> Locator:
        """The path cell once stats know it (direct or relay)."""
        path = self.peer(name).locator(".path")
        expect(path).to_have_attribute("data-path", re.compile("relay|direct"), timeout=WAIT_MS)
        return path

    def rtt(self, name: str) -> Locator:
        return self.peer(name).locator(".rtt")

    def say(self, text: str) -> None:
        self.page.fill("#chat-input", text)
        self.page.click("#chat-send")

    def chat_line(self, text: str) -> Locator:
        return self.page.locator("#chat-log li", has_text=text)

    def error(self) -> Locator:
        return self.page.locator("#error")

    def remote_video(self, name: str) -> Locator:
        return self.page.locator(f'video.remote[data-peer="{name}"]')

    def video_frames(self, name: str) -> int:
        frames: int = self.remote_video(name).evaluate(
            "v => v.getVideoPlaybackQuality().totalVideoFrames"
        )
        return frames

    def screenshot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path
