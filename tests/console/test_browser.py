"""The console in real Chromium (the system one, no browser download) against a real uvicorn:
first run → project → key → ban → dashboard, and a second account that cannot see or change the
first one's project. Screenshots of each page go to artifacts/screenshots/console/."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from pulsebeam.auth import public_key_for_secret
from pulsebeam.console import announce_first_run
from pulsebeam.control.base import utcnow
from pulsebeam.control.events import BanAdded, KeyDeleted
from pulsebeam.control.records import ConnectionLogEntry, UsageDelta
from pulsebeam.control.views import Actor
from tests.console.conftest import PASSWORD, SCREENSHOTS, ConsoleUnderTest
from tests.fixtures.chromium import CHROMIUM, CHROMIUM_FLAGS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS
        )
        try:
            yield launched
        finally:
            await launched.close()


async def shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)


async def seed_usage(console: ConsoleUnderTest, project_id: str) -> None:
    """Usage and connection rows as the signaling and TURN layers write them."""
    now = utcnow()
    today = now.date()
    await console.store.record_usage(
        [
            UsageDelta(
                project_id,
                today - timedelta(days=back),
                messages=100 * (back + 1),
                peak_streams=back + 2,
                turn_bytes=1_500_000 * (back + 1),
                peers=frozenset({("room1", f"peer{i}") for i in range(back + 1)}),
            )
            for back in range(5)
        ]
    )
    await console.store.record_connections(
        [
            ConnectionLogEntry(
                project_id,
                now - timedelta(minutes=i),
                "room1",
                "alice",
                1,
                "room1",
                f"bob{i}",
                2,
                "connect",
                "relay" if i % 2 else "direct",
            )
            for i in range(3)
        ]
    )


async def test_first_run_project_key_ban_dashboard(
    console: ConsoleUnderTest, live_console: str, browser: Browser
) -> None:
    context = await browser.new_context(viewport={"width": 1200, "height": 900})
    await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_console)
    page = await context.new_page()
    page.set_default_timeout(10_000)

    # First run: the link the server logs creates the first account and signs it in.
    link = await announce_first_run(console.app, f"{live_console}/console")
    assert link is not None
    await page.goto(link)
    await shot(page, "01-setup")
    await page.get_by_label("Email").fill("owner@example.com")
    await page.get_by_label("Password", exact=False).first.fill(PASSWORD)
    await page.get_by_label("Password again").fill(PASSWORD)
    await page.get_by_role("button", name="Create account").click()
    await expect(page.get_by_role("heading", name="Projects")).to_be_visible()
    assert await announce_first_run(console.app, f"{live_console}/console") is None
    await shot(page, "02-projects-empty")

    # A project.
    await page.get_by_label("Name").fill("Demo app")
    await page.get_by_role("button", name="Create project").click()
    await expect(page.get_by_role("heading", name="Demo app")).to_be_visible()
    project_id = page.url.split("/projects/")[1].split("?")[0]
    assert (await console.store.get_project(project_id)).name == "Demo app"

    # A key: the secret shown once, copyable and downloadable as .env.
    await page.get_by_role("link", name="Keys").click()
    await page.get_by_label("Label").fill("production")
    await page.get_by_role("button", name="Create key").click()
    kid = await page.locator("#new-api-key").inner_text()
    secret = await page.locator("#new-api-secret").inner_text()
    stored = await console.store.get_key(kid)
    assert stored is not None
    assert stored.project_id == project_id
    assert stored.public_key == public_key_for_secret(secret)
    await page.get_by_role("button", name="Copy secret").click()
    await expect(page.get_by_role("button", name="Copied")).to_be_visible()
    assert await page.evaluate("navigator.clipboard.readText()") == secret
    async with page.expect_download() as download_info:
        await page.get_by_role("link", name="Download .env").click()
    download = await download_info.value
    env_text = (await download.path()).read_text()
    assert f"PULSEBEAM_API_KEY={kid}\nPULSEBEAM_API_SECRET={secret}\n" == env_text
    await shot(page, "03-key-created")
    await page.get_by_role("link", name="Keys").click()
    await expect(page.get_by_role("cell", name=kid, exact=True)).to_be_visible()
    assert secret not in await page.content()  # shown once

    # A second key, deleted after a confirmation that says what it does.
    await page.get_by_label("Label").fill("old laptop")
    await page.get_by_role("button", name="Create key").click()
    old_kid = await page.locator("#new-api-key").inner_text()
    await page.get_by_role("link", name="Keys").click()
    await shot(page, "04-keys")
    await page.get_by_role("link", name=f"Delete key {old_kid}").click()
    await expect(
        page.get_by_text("Every token minted with this key stops working now")
    ).to_be_visible()
    await shot(page, "05-key-delete-confirm")
    await page.get_by_role("button", name="Delete key now").click()
    await expect(page.get_by_role("status")).to_contain_text("Key deleted")
    assert await console.store.get_key(old_kid) is None
    assert KeyDeleted(old_kid, project_id) in console.events.events

    # The quick start shows the real key id and server URL, never the secret.
    await page.get_by_role("link", name="Overview").click()
    quick = page.locator(".quickstart")
    await expect(quick).to_contain_text(kid)
    await expect(quick).to_contain_text(f'baseUrl: "{live_console}/grpc"')
    assert secret not in await page.content()
    await shot(page, "06-overview-quickstart")

    # A ban: a bad pattern is refused with its reason, a good one is listed and published.
    await page.get_by_role("link", name="Bans").click()
    await page.get_by_label("Group pattern").fill("room1")
    await page.get_by_label("Peer pattern").fill("a**b")
    await page.get_by_role("button", name="Ban and disconnect").click()
    await expect(page.get_by_role("alert")).to_contain_text("peer pattern")
    assert await console.store.list_bans(project_id) == []
    await page.get_by_label("Peer pattern").fill("mallory")
    await page.get_by_label("Reason").fill("spam")
    await page.get_by_label("Lasts").select_option("1d")
    await page.get_by_role("button", name="Ban and disconnect").click()
    await expect(page.get_by_role("status")).to_contain_text("Ban added")
    [ban] = await console.store.list_bans(project_id)
    assert (ban.group_pattern, ban.peer_pattern, ban.reason) == ("room1", "mallory", "spam")
    assert ban.expires_at is not None
    assert BanAdded.of(ban) in console.events.events  # with its expiry
    await shot(page, "07-bans")

    # The dashboard, over data the signaling and TURN layers would have written.
    await seed_usage(console, project_id)
    await page.get_by_role("link", name="Usage").click()
    await page.get_by_role("link", name="7 days").click()
    today = utcnow().date().isoformat()
    for chart in ("peers", "concurrent", "messages", "turn"):
        await expect(page.locator(f"#chart-{chart} rect.bar")).to_have_count(7)
    assert (
        await page.locator(f'#chart-peers rect[data-day="{today}"]').get_attribute("data-value")
        == "1"
    )
    assert (
        await page.locator(f'#chart-messages rect[data-day="{today}"]').get_attribute("data-value")
        == "100"
    )
    await expect(page.locator("#chart-turn figcaption")).to_contain_text("total 22.5 MB")
    await shot(page, "08-usage")
    await page.set_viewport_size({"width": 390, "height": 844})
    await shot(page, "09-usage-narrow")
    await page.set_viewport_size({"width": 1200, "height": 900})

    await page.get_by_role("link", name="Connections").click()
    await expect(page.locator("#connections tbody tr")).to_have_count(3)
    await expect(page.locator("#connections")).to_contain_text("relayed")
    await shot(page, "10-connections")

    await page.get_by_role("link", name="Audit log").click()
    await page.get_by_label("Kind").select_option("key")
    await page.get_by_role("button", name="Filter").click()
    actions = await page.locator("#audit tbody td:nth-child(3)").all_inner_texts()
    assert actions == ["key.delete", "key.create", "key.create"]
    await shot(page, "11-audit")

    await page.get_by_role("link", name="Members").click()
    await expect(page.get_by_role("cell", name="owner@example.com (you)")).to_be_visible()
    await shot(page, "12-members")

    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await page.goto(f"{live_console}/console/projects/{project_id}/keys")
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await context.close()


async def test_second_account_cannot_see_or_change_the_project(
    console: ConsoleUnderTest, live_console: str, browser: Browser
) -> None:
    store = console.store
    owner = await store.create_first_account("owner@example.com", PASSWORD)
    project = await store.create_project("Private", owner.id, Actor(owner.email, owner.id))
    key = (await store.create_key(project.id, "prod", Actor(owner.email, owner.id))).key
    await store.create_account("other@example.com", PASSWORD, Actor.admin_cli())

    context = await browser.new_context(viewport={"width": 1000, "height": 700})
    page = await context.new_page()
    page.set_default_timeout(10_000)
    # Signed out, a project page asks to sign in and comes back; all by keyboard.
    await page.goto(f"{live_console}/console/projects/{project.id}")
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await shot(page, "13-signin")
    await page.keyboard.type("other@example.com")  # the email field has autofocus
    await page.keyboard.press("Tab")
    await page.keyboard.type(PASSWORD)
    await page.keyboard.press("Enter")

    # Back at the project: not found, exactly like a project that does not exist.
    await expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    await shot(page, "14-not-yours")
    for suffix in ("", "/keys", "/bans", "/members", "/usage", "/connections", "/audit"):
        response = await page.goto(f"{live_console}/console/projects/{project.id}{suffix}")
        assert response is not None
        assert response.status == 404, suffix
    response = await page.goto(f"{live_console}/console/projects/prj_0000000000000000")
    assert response is not None
    assert response.status == 404
    await page.goto(f"{live_console}/console/projects")
    await expect(page.get_by_text("You have no projects yet")).to_be_visible()
    assert "Private" not in await page.content()

    # Forms posted with this account's own valid CSRF token change nothing.
    csrf = await page.locator('input[name="csrf"]').first.input_value()
    base = f"{live_console}/console/projects/{project.id}"
    attempts = {
        "/keys": {"label": "mine now"},
        f"/keys/{key.kid}/delete": {},
        "/bans": {"group_pattern": "*", "peer_pattern": "*", "duration": "forever"},
        "/rename": {"name": "Taken"},
        "/members": {"email": "other@example.com", "role": "owner"},
        "/delete": {"confirm_name": "Private"},
    }
    for suffix, fields in attempts.items():
        response = await page.request.post(base + suffix, form={"csrf": csrf, **fields})
        assert response.status == 404, suffix
    assert [k.key.kid for k in await store.list_project_keys(project.id)] == [key.kid]
    assert await store.list_bans(project.id) == []
    assert (await store.get_project(project.id)).name == "Private"
    assert [m.email for m in await store.list_members(project.id)] == ["owner@example.com"]
    assert console.events.events == []
    await context.close()
