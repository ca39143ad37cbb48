"""The console's pages over HTTP, in process (httpx): setup, sign-in, CSRF, bad input, access
rules, events, filters and paging. Each refused request is checked to have changed nothing."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import update
from starlette.applications import Starlette
from starlette.routing import Mount

from pulsebeam.console import announce_first_run, create_console
from pulsebeam.console.common import MAX_FORM_BYTES
from pulsebeam.control.api import create_api
from pulsebeam.control.api.security import CookieNames
from pulsebeam.control.base import utcnow
from pulsebeam.control.events import BanRemoved, KeyDeleted
from pulsebeam.control.schema import keys as keys_table
from pulsebeam.control.store import Store
from pulsebeam.control.throttle import LoginThrottle
from pulsebeam.control.views import Actor
from tests.console.conftest import PASSWORD, ConsoleUnderTest, EventLog, csrf_of, first_account


async def new_project(client: httpx.AsyncClient, csrf: str, name: str = "Demo") -> str:
    response = await client.post("/console/projects", data={"csrf": csrf, "name": name})
    assert response.status_code == 303, response.text
    return response.headers["location"].split("/projects/")[1].split("?")[0]


async def sign_in(
    client: httpx.AsyncClient, email: str, password: str = PASSWORD
) -> httpx.Response:
    page = await client.get("/console/signin")
    return await client.post(
        "/console/signin",
        data={"csrf": csrf_of(page.text), "email": email, "password": password, "next": ""},
    )


# -- first run ------------------------------------------------------------------------------


async def test_without_accounts_the_console_points_to_the_setup_link(
    console: ConsoleUnderTest, client: httpx.AsyncClient
) -> None:
    page = await client.get("/console/")
    assert page.status_code == 200
    assert "one-time setup link" in page.text
    assert (await client.get("/console/signin")).status_code == 303


async def test_setup_refuses_a_wrong_token_and_changes_nothing(
    console: ConsoleUnderTest, client: httpx.AsyncClient
) -> None:
    url = await announce_first_run(console.app, "http://127.0.0.1/console")
    assert url is not None
    assert url.startswith("http://127.0.0.1/console/setup?token=")
    assert (await client.get("/console/setup?token=guess")).status_code == 404
    page = await client.get(url)
    form = {"csrf": csrf_of(page.text), "email": "a@example.com", "password": PASSWORD}
    wrong = await client.post(
        "/console/setup", data={**form, "token": "guess", "password2": PASSWORD}
    )
    assert wrong.status_code == 404
    assert "not valid" in wrong.text
    assert not await console.store.has_accounts()


async def test_setup_checks_the_form(console: ConsoleUnderTest, client: httpx.AsyncClient) -> None:
    url = await announce_first_run(console.app, "http://127.0.0.1/console")
    assert url is not None
    token = url.split("token=")[1]
    page = await client.get(url)
    base = {"csrf": csrf_of(page.text), "token": token, "email": "a@example.com"}
    differ = await client.post(
        "/console/setup", data={**base, "password": PASSWORD, "password2": PASSWORD + "x"}
    )
    assert differ.status_code == 400
    assert "the two passwords differ" in differ.text
    weak = await client.post(
        "/console/setup",
        data={**base, "csrf": csrf_of(differ.text), "password": "short", "password2": "short"},
    )
    assert weak.status_code == 400
    assert "password too weak" in weak.text
    no_csrf = await client.post(
        "/console/setup", data={**base, "csrf": "", "password": PASSWORD, "password2": PASSWORD}
    )
    assert no_csrf.status_code == 403
    assert not await console.store.has_accounts()


async def test_setup_link_works_once(console: ConsoleUnderTest, client: httpx.AsyncClient) -> None:
    url = await announce_first_run(console.app, "http://127.0.0.1/console")
    assert url is not None
    await first_account(console, client)
    assert await announce_first_run(console.app, "http://127.0.0.1/console") is None
    again = await client.get(url)
    assert again.status_code == 303
    assert "setup_done" in again.headers["location"]


# -- sessions -------------------------------------------------------------------------------


async def test_the_console_uses_the_api_session_cookie(
    console: ConsoleUnderTest, client: httpx.AsyncClient
) -> None:
    csrf = await first_account(console, client)
    cookie = client.cookies.get(CookieNames.for_tls(False).session)
    assert cookie is not None
    session = await console.store.get_session(cookie)
    assert session is not None
    assert session.csrf_token == csrf


async def test_sign_in_failures_are_refused_then_throttled(
    console: ConsoleUnderTest, client: httpx.AsyncClient
) -> None:
    await console.store.create_first_account("owner@example.com", PASSWORD)
    wrong = await sign_in(client, "owner@example.com", "not the password")
    assert wrong.status_code == 401
    assert "wrong email or password" in wrong.text
    for _ in range(4):
        await sign_in(client, "owner@example.com", "not the password")
    throttled = await sign_in(client, "owner@example.com", PASSWORD)
    assert throttled.status_code == 429
    assert "too many failed sign-ins" in throttled.text
    assert (await client.get("/console/projects")).status_code == 303  # still signed out


async def test_pre_sign_in_forms_need_the_csrf_cookie(
    console: ConsoleUnderTest, client: httpx.AsyncClient
) -> None:
    """Login CSRF: a form posted from another site carries neither our pre-sign-in cookie nor
    its value; an empty field must not match the absent cookie (else the attacker signs the
    victim in to the attacker's account, or finishes setup with the attacker's)."""
    url = await announce_first_run(console.app, "http://127.0.0.1/console")
    assert url is not None
    setup = {
        "token": url.split("token=")[1],
        "email": "mallory@example.com",
        "password": PASSWORD,
        "password2": PASSWORD,
    }
    for fields in ({}, {"csrf": ""}):
        refused = await client.post("/console/setup", data={**setup, **fields})
        assert refused.status_code == 403
        assert "security token" in refused.text
    assert not await console.store.has_accounts()
    await console.store.create_first_account("mallory@example.com", PASSWORD)
    login = {"email": "mallory@example.com", "password": PASSWORD, "next": ""}
    for fields in ({}, {"csrf": ""}):
        refused = await client.post("/console/signin", data={**login, **fields})
        assert refused.status_code == 403
        assert CookieNames.for_tls(False).session not in refused.headers.get("set-cookie", "")
    assert (await client.get("/console/projects")).status_code == 303  # still signed out


async def test_concurrent_sign_ins_cannot_outrun_the_throttle(
    console: ConsoleUnderTest, client: httpx.AsyncClient
) -> None:
    await console.store.create_first_account("owner@example.com", PASSWORD)
    page = await client.get("/console/signin")
    form = {"csrf": csrf_of(page.text), "email": "owner@example.com", "next": ""}
    answers = await asyncio.gather(
        *(
            client.post("/console/signin", data={**form, "password": f"wrong password {n}"})
            for n in range(8)
        )
    )
    assert sorted(r.status_code for r in answers) == [401] * 5 + [429] * 3


async def test_sign_in_returns_to_the_page_asked_for_but_never_off_site(
    console: ConsoleUnderTest, client: httpx.AsyncClient
) -> None:
    await console.store.create_first_account("owner@example.com", PASSWORD)
    asked = await client.get("/console/projects")
    assert asked.status_code == 303
    assert asked.headers["location"] == "/console/signin?next=%2Fconsole%2Fprojects"
    for target, landing in (
        ("/console/projects", "/console/projects"),
        ("//evil.example/", "/console/projects"),
        ("https://evil.example/console/x", "/console/projects"),
    ):
        page = await client.get("/console/signin")
        response = await client.post(
            "/console/signin",
            data={
                "csrf": csrf_of(page.text),
                "email": "owner@example.com",
                "password": PASSWORD,
                "next": target,
            },
        )
        assert response.status_code == 303
        assert response.headers["location"] == landing
        client.cookies.clear()


async def test_sign_out_ends_the_session(
    console: ConsoleUnderTest, client: httpx.AsyncClient
) -> None:
    csrf = await first_account(console, client)
    cookie = client.cookies.get("pulsebeam_session")
    assert cookie is not None
    assert (await client.post("/console/signout", data={"csrf": "wrong"})).status_code == 403
    out = await client.post("/console/signout", data={"csrf": csrf})
    assert out.status_code == 303
    assert await console.store.get_session(cookie) is None


# -- forms: CSRF and bad input --------------------------------------------------------------


async def test_forms_without_the_session_csrf_token_change_nothing(
    console: ConsoleUnderTest, client: httpx.AsyncClient
) -> None:
    csrf = await first_account(console, client)
    project_id = await new_project(client, csrf)
    for path, fields in (
        ("/console/projects", {"name": "Sneaky"}),
        (f"/console/projects/{project_id}/keys", {"label": "x"}),
        (f"/console/projects/{project_id}/bans", {"group_pattern": "*", "peer_pattern": "*"}),
        (f"/console/projects/{project_id}/delete", {"confirm_name": "Demo"}),
    ):
        for bad in ({}, {"csrf": "forged"}):
            response = await client.post(path, data={**fields, **bad})
            assert response.status_code == 403, path
            assert "security token" in response.text
    assert [p.name for p in await console.store.list_projects()] == ["Demo"]
    assert await console.store.list_project_keys(project_id) == []
    assert await console.store.list_bans(project_id) == []


async def test_oversized_or_non_form_bodies_are_refused(
    console: ConsoleUnderTest, client: httpx.AsyncClient
) -> None:
    csrf = await first_account(console, client)
    big = await client.post(
        "/console/projects", data={"csrf": csrf, "name": "x" * (MAX_FORM_BYTES + 1)}
    )
    assert big.status_code == 413
    as_json = await client.post("/console/projects", json={"csrf": csrf, "name": "Json"})
    assert as_json.status_code == 400
    assert "x-www-form-urlencoded" in as_json.text
    long_name = await client.post("/console/projects", data={"csrf": csrf, "name": "x" * 101})
    assert long_name.status_code == 400
    assert "project name is too long" in long_name.text
    assert await console.store.list_projects() == []


async def test_a_bad_ban_is_explained_and_not_added(
    console: ConsoleUnderTest, client: httpx.AsyncClient
) -> None:
    csrf = await first_account(console, client)
    project_id = await new_project(client, csrf)
    path = f"/console/projects/{project_id}/bans"
    for fields, message in (
        ({"group_pattern": "room 1", "peer_pattern": "*"}, "group pattern"),
        ({"group_pattern": "*", "peer_pattern": "*", "duration": "1y"}, "how long the ban lasts"),
        ({"group_pattern": "*", "peer_pattern": "*", "reason": "\x00"}, "control characters"),
    ):
        response = await client.post(path, data={"csrf": csrf, **fields})
        assert response.status_code == 400
        assert message in response.text
    assert await console.store.list_bans(project_id) == []
    assert console.events.events == []


# -- keys, bans, projects: events ------------------------------------------------------------


async def test_deleting_keys_bans_and_projects_publishes_revocations(
    console: ConsoleUnderTest, client: httpx.AsyncClient
) -> None:
    csrf = await first_account(console, client)
    project_id = await new_project(client, csrf)
    created = await client.post(
        f"/console/projects/{project_id}/keys", data={"csrf": csrf, "label": "a"}
    )
    assert created.status_code == 201
    assert "only time the secret is shown" in created.text
    assert created.headers["cache-control"] == "no-store"
    [first, second] = [
        (await console.store.create_key(project_id, label, Actor("t"))).key.kid for label in "bc"
    ]
    confirm = await client.get(f"/console/projects/{project_id}/keys/{first}/delete")
    assert "Every token minted with this key stops working now" in confirm.text
    deleted = await client.post(
        f"/console/projects/{project_id}/keys/{first}/delete", data={"csrf": csrf}
    )
    assert deleted.status_code == 303
    assert console.events.events == [KeyDeleted(first, project_id)]
    missing = await client.post(
        f"/console/projects/{project_id}/keys/{first}/delete", data={"csrf": csrf}
    )
    assert missing.status_code == 404

    ban = await console.store.add_ban(project_id, "*", "mallory", Actor("t"))
    lifted = await client.post(
        f"/console/projects/{project_id}/bans/{ban.id}/remove", data={"csrf": csrf}
    )
    assert lifted.status_code == 303
    assert console.events.events[-1] == BanRemoved(ban.id, project_id)

    wrong_name = await client.post(
        f"/console/projects/{project_id}/delete", data={"csrf": csrf, "confirm_name": "demo"}
    )
    assert wrong_name.status_code == 400
    assert "type the name of the project exactly" in wrong_name.text
    gone = await client.post(
        f"/console/projects/{project_id}/delete", data={"csrf": csrf, "confirm_name": "Demo"}
    )
    assert gone.status_code == 303
    remaining = {e.kid for e in console.events.events[2:] if isinstance(e, KeyDeleted)}
    kids = {k.kid for k in await console.store.list_keys()}
    assert second in remaining
    assert not kids & remaining
    assert (await client.get(f"/console/projects/{project_id}")).status_code == 404


async def test_old_keys_carry_a_rotation_warning(
    console: ConsoleUnderTest, client: httpx.AsyncClient
) -> None:
    csrf = await first_account(console, client)
    project_id = await new_project(client, csrf)
    kid = (await console.store.create_key(project_id, "old", Actor("t"))).key.kid
    page = await client.get(f"/console/projects/{project_id}/keys")
    assert ">rotate<" not in page.text
    async with console.store._tx() as conn:  # age the key as if created 91 days ago
        await conn.execute(
            update(keys_table)
            .where(keys_table.c.kid == kid)
            .values(created_at=utcnow() - timedelta(days=91))
        )
    page = await client.get(f"/console/projects/{project_id}/keys")
    assert ">rotate<" in page.text
    assert "91 days" in page.text


# -- members ---------------------------------------------------------------------------------


async def test_owners_manage_members_and_members_cannot(
    console: ConsoleUnderTest, client: httpx.AsyncClient
) -> None:
    csrf = await first_account(console, client)
    project_id = await new_project(client, csrf)
    other = await console.store.create_account("member@example.com", PASSWORD, Actor.admin_cli())
    path = f"/console/projects/{project_id}/members"
    unknown = await client.post(
        path, data={"csrf": csrf, "email": "nobody@example.com", "role": "member"}
    )
    assert unknown.status_code == 404
    assert "no account with email nobody@example.com" in unknown.text
    added = await client.post(
        path, data={"csrf": csrf, "email": "member@example.com", "role": "member"}
    )
    assert added.status_code == 303
    twice = await client.post(
        path, data={"csrf": csrf, "email": "member@example.com", "role": "member"}
    )
    assert twice.status_code == 409

    client.cookies.clear()
    assert (await sign_in(client, "member@example.com")).status_code == 303
    member_csrf = csrf_of((await client.get("/console/projects")).text)
    page = await client.get(path)
    assert page.status_code == 200
    assert "Add a member" not in page.text
    refused = await client.post(
        path, data={"csrf": member_csrf, "email": "owner@example.com", "role": "member"}
    )
    assert refused.status_code == 403
    promote = await client.post(
        f"{path}/{other.id}/role", data={"csrf": member_csrf, "role": "owner"}
    )
    assert promote.status_code == 403
    # Members use the project: keys work for them.
    key = await client.post(
        f"/console/projects/{project_id}/keys", data={"csrf": member_csrf, "label": "m"}
    )
    assert key.status_code == 201
    roles = {m.email: m.role.value for m in await console.store.list_members(project_id)}
    assert roles == {"owner@example.com": "owner", "member@example.com": "member"}


# -- monitoring ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("days=13", "days must be one of 7, 30, 90"),
        ("start=2030-01-05&end=2030-01-01", "ends before it starts"),
        ("start=yesterday&end=2030-01-01", "the start date must be a date"),
        ("start=2020-01-01&end=2030-01-01", "at most 366 days"),
    ],
)
async def test_usage_ranges_are_checked(
    console: ConsoleUnderTest, client: httpx.AsyncClient, query: str, message: str
) -> None:
    csrf = await first_account(console, client)
    project_id = await new_project(client, csrf)
    page = await client.get(f"/console/projects/{project_id}/usage?{query}")
    assert page.status_code == 400
    assert message in page.text


async def test_a_custom_usage_range_has_one_bar_per_day(
    console: ConsoleUnderTest, client: httpx.AsyncClient
) -> None:
    csrf = await first_account(console, client)
    project_id = await new_project(client, csrf)
    page = await client.get(f"/console/projects/{project_id}/usage?start=2030-01-01&end=2030-01-10")
    assert page.status_code == 200
    assert page.text.count('class="bar"') == 4 * 10


async def test_audit_log_filters_and_pages(
    console: ConsoleUnderTest, client: httpx.AsyncClient
) -> None:
    csrf = await first_account(console, client)
    project_id = await new_project(client, csrf)
    me = Actor("owner@example.com", "x")
    for i in range(55):
        await console.store.add_ban(project_id, "*", f"p{i}", me)
    await console.store.create_key(project_id, "k", Actor("robot@example.com"))
    path = f"/console/projects/{project_id}/audit"
    keys_only = await client.get(path, params={"kind": "key"})
    assert keys_only.text.count("<code>key.create</code>") == 1
    assert "<code>ban.add</code>" not in keys_only.text
    robot = await client.get(path, params={"actor": "ROBOT"})
    assert robot.text.count("<tr>") == 2  # header and one row
    first = await client.get(path, params={"kind": "ban"})
    assert first.text.count("<code>ban.add</code>") == 50
    older = first.text.split('rel="next"')[0].rsplit('href="', 1)[1].split('"')[0]
    second = await client.get(older.replace("&amp;", "&"))
    assert second.text.count("<code>ban.add</code>") == 5
    for bad in ({"kind": "nope"}, {"before": "-1"}, {"actor": "x" * 300}):
        assert (await client.get(path, params=bad)).status_code == 400


async def test_pages_carry_security_headers(
    console: ConsoleUnderTest, client: httpx.AsyncClient
) -> None:
    page = await client.get("/console/")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "no-referrer"
    static = await client.get("/console/static/console.css")
    assert static.status_code == 200
    assert "cache-control" not in static.headers
    assert (await client.get("/console/no-such-page")).status_code == 404


async def test_one_sign_in_serves_the_console_and_the_rest_api(store: Store) -> None:
    """Mounted side by side as the server does: the console's session cookie and CSRF token
    are the API's, and the two share one sign-in throttle."""
    events = EventLog()
    throttle = LoginThrottle()
    console_app = create_console(store, events, secure_cookies=False, throttle=throttle)
    api = create_api(store, events, secure_cookies=False, throttle=throttle)
    root = Starlette(routes=[Mount("/api/v1", app=api), Mount("/console", app=console_app)])
    both = ConsoleUnderTest(store, events, console_app, root)
    transport = httpx.ASGITransport(app=root)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        csrf = await first_account(both, client)
        whoami = await client.get("/api/v1/session")
        assert whoami.status_code == 200
        assert whoami.json()["account"]["email"] == "owner@example.com"
        created = await client.post(
            "/api/v1/projects", json={"name": "Via API"}, headers={"X-CSRF-Token": csrf}
        )
        assert created.status_code == 201, created.text
        page = await client.get("/console/projects")
        assert "Via API" in page.text
