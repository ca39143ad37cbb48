"""Sign-in, cookies, CSRF, API tokens, throttling and expiry of the REST API (in-process)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
import pytest

from pulsebeam.control.api import create_api
from pulsebeam.control.store import Store
from pulsebeam.control.throttle import LoginThrottle
from pulsebeam.control.views import Actor

from .conftest import ApiClient, EventLog
from .helpers import PASSWORD


def _error(response: httpx.Response) -> tuple[int, str, str]:
    body = response.json()["error"]
    return response.status_code, body["code"], body["message"]


async def test_sign_in_sets_a_strict_httponly_cookie(alice: ApiClient) -> None:
    me = await alice.call("GET", "/session")
    assert me.status_code == 200
    assert me.json()["account"]["email"] == "alice@example.com"
    assert me.json()["via"] == "session"


async def test_cookie_attributes(sqlite_store: Store, events: EventLog) -> None:
    await sqlite_store.create_account("a@example.com", PASSWORD, Actor.admin_cli())
    for secure, name in ((False, "pulsebeam_session"), (True, "__Host-pulsebeam_session")):
        app = create_api(sqlite_store, events, secure_cookies=secure)
        client = ApiClient(app, base_url="https://127.0.0.1" if secure else "http://127.0.0.1")
        response = await client.sign_in("a@example.com")
        await client.aclose()
        cookie = response.headers["set-cookie"]
        assert cookie.startswith(f"{name}=")
        attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
        assert {"httponly", "samesite=strict", "path=/"} <= attributes
        assert ("secure" in attributes) is secure
        assert not any(a.startswith("domain") for a in attributes)


async def test_wrong_credentials(client: ApiClient, sqlite_store: Store) -> None:
    await sqlite_store.create_account("a@example.com", PASSWORD, Actor.admin_cli())
    wrong = await client.sign_in("a@example.com", "not the password")
    unknown = await client.sign_in("who@example.com", PASSWORD)
    # Same answer for an unknown account and a wrong password: no account enumeration.
    assert _error(wrong) == _error(unknown) == (401, "unauthenticated", "wrong email or password")
    assert "set-cookie" not in wrong.headers
    assert _error(await client.call("GET", "/projects"))[:2] == (401, "unauthenticated")


async def test_csrf_is_required_for_cookie_writes(alice: ApiClient, sqlite_store: Store) -> None:
    for headers in ({}, {"X-CSRF-Token": "forged"}):
        refused = await alice.http.post("/projects", json={"name": "P"}, headers=headers)
        status, code, message = _error(refused)
        assert (status, code) == (403, "permission_denied")
        assert "X-CSRF-Token" in message
    assert await sqlite_store.list_projects() == []
    assert (await alice.http.get("/projects")).status_code == 200  # safe methods need none
    created = await alice.call("POST", "/projects", json={"name": "P"})
    assert created.status_code == 201


async def test_sign_out_ends_the_session(alice: ApiClient) -> None:
    response = await alice.call("DELETE", "/session")
    assert response.status_code == 204
    assert 'pulsebeam_session=""' in response.headers["set-cookie"]
    assert (await alice.call("GET", "/session")).status_code == 401


async def test_expired_sessions_are_refused(client: ApiClient, sqlite_store: Store) -> None:
    account = await sqlite_store.create_account("a@example.com", PASSWORD, Actor.admin_cli())
    session = await sqlite_store.create_session(account, ttl=timedelta(seconds=-1))
    assert session.token is not None
    client.http.cookies.set("pulsebeam_session", session.token)
    assert _error(await client.call("GET", "/projects"))[:2] == (401, "unauthenticated")


async def test_personal_api_tokens(alice: ApiClient) -> None:
    created = await alice.call("POST", "/tokens", json={"name": "ci", "expires_in_days": 30})
    assert created.status_code == 201
    token = created.json()["token"]
    listed = await alice.call("GET", "/tokens")
    assert [t["name"] for t in listed.json()] == ["ci"]
    assert "token" not in listed.json()[0]

    script = ApiClient(alice.app)
    bearer = {"Authorization": f"Bearer {token}"}
    # No cookie and no CSRF header: a Bearer token is enough, and nothing else is.
    project = await script.call("POST", "/projects", json={"name": "P"}, headers=bearer)
    assert project.status_code == 201
    me = await script.call("GET", "/session", headers=bearer)
    assert me.json()["via"] == "token"
    assert me.json()["csrf_token"] is None
    bad = await script.call("GET", "/projects", headers={"Authorization": "Bearer pbt_nope"})
    assert _error(bad)[:2] == (401, "unauthenticated")
    basic = await script.call("GET", "/projects", headers={"Authorization": "Basic eDp5"})
    assert "Bearer" in _error(basic)[2]

    token_id = created.json()["id"]
    assert (await alice.call("DELETE", f"/tokens/{token_id}")).status_code == 204
    assert (await script.call("GET", "/projects", headers=bearer)).status_code == 401
    assert (await alice.call("DELETE", f"/tokens/{token_id}")).status_code == 404
    await script.aclose()


async def test_sign_in_is_throttled_per_account_and_address(
    sqlite_store: Store, events: EventLog
) -> None:
    await sqlite_store.create_account("a@example.com", PASSWORD, Actor.admin_cli())
    throttle = LoginThrottle(per_account=3, per_address=5, window_secs=60)
    client = ApiClient(create_api(sqlite_store, events, secure_cookies=False, throttle=throttle))
    for _ in range(3):
        assert (await client.sign_in("a@example.com", "wrong password!")).status_code == 401
    blocked = await client.sign_in("a@example.com")  # even the right password must wait
    status, code, message = _error(blocked)
    assert (status, code) == (429, "resource_exhausted")
    assert "try again in" in message
    assert 0 < int(blocked.headers["Retry-After"]) <= 60
    # Per address: spraying other accounts from the same address runs out too.
    for n in range(2):
        assert (await client.sign_in(f"x{n}@example.com", "wrong password!")).status_code == 401
    assert (await client.sign_in("fresh@example.com", "wrong password!")).status_code == 429
    await client.aclose()


async def test_a_success_clears_the_account_counter() -> None:
    now = [0.0]
    throttle = LoginThrottle(per_account=2, per_address=100, window_secs=10, clock=lambda: now[0])
    throttle.failed("a@example.com", "1.2.3.4")
    throttle.succeeded("A@example.com", "1.2.3.4")
    throttle.failed("a@example.com", "1.2.3.4")
    throttle.check("a@example.com", "1.2.3.4")  # one failure since the success: allowed
    throttle.failed("a@example.com", "1.2.3.4")
    with pytest.raises(Exception, match="try again in 10 s"):
        throttle.check("a@example.com", "5.6.7.8")
    now[0] = 10.5  # the window slid past both failures
    throttle.check("a@example.com", "5.6.7.8")


def test_throttle_memory_is_bounded() -> None:
    throttle = LoginThrottle(per_account=1, per_address=1, window_secs=60, max_keys=10)
    for n in range(100):
        throttle.failed(f"user{n}@example.com", f"10.0.0.{n}")
    assert len(throttle._accounts._hits) == 10
    assert len(throttle._addresses._hits) == 10


async def test_sign_up_and_its_errors(
    client: ApiClient, sqlite_store: Store, events: EventLog
) -> None:
    ok = await client.call(
        "POST", "/accounts", json={"email": "New@Example.com", "password": PASSWORD}
    )
    assert ok.status_code == 201
    assert ok.json()["email"] == "new@example.com"
    dup = await client.call(
        "POST", "/accounts", json={"email": "new@example.com", "password": PASSWORD}
    )
    assert _error(dup)[:2] == (409, "already_exists")
    weak = await client.call(
        "POST", "/accounts", json={"email": "w@example.com", "password": "abc"}
    )
    assert _error(weak) == (
        400,
        "invalid_argument",
        "password too weak: use at least 10 characters",
    )
    assert [a.email for a in await sqlite_store.list_accounts()] == ["new@example.com"]
    closed = ApiClient(create_api(sqlite_store, events, secure_cookies=False))
    refused = await closed.call(
        "POST", "/accounts", json={"email": "z@example.com", "password": PASSWORD}
    )
    assert _error(refused)[:2] == (403, "permission_denied")
    assert "pulsebeam account create" in _error(refused)[2]
    await closed.aclose()


async def test_change_password(alice: ApiClient) -> None:
    wrong = await alice.call(
        "PUT", "/account/password", json={"current_password": "nope", "new_password": "x" * 12}
    )
    assert _error(wrong)[:2] == (403, "permission_denied")
    weak = await alice.call(
        "PUT", "/account/password", json={"current_password": PASSWORD, "new_password": "short"}
    )
    assert _error(weak)[:2] == (400, "invalid_argument")
    done = await alice.call(
        "PUT",
        "/account/password",
        json={"current_password": PASSWORD, "new_password": "a brand new secret"},
    )
    assert done.status_code == 204
    assert (await alice.call("GET", "/session")).status_code == 401  # signed out everywhere
    assert (await alice.sign_in("alice@example.com", "a brand new secret")).status_code == 200


async def test_concurrent_sign_ins_cannot_outrun_the_throttle(
    sqlite_store: Store, events: EventLog
) -> None:
    """Attempts sent at once all wait on the password hash: each must count from the start, or
    every one of them passes the check before any failure is recorded."""
    await sqlite_store.create_account("a@example.com", PASSWORD, Actor.admin_cli())
    throttle = LoginThrottle(per_account=3, per_address=100, window_secs=60)
    client = ApiClient(create_api(sqlite_store, events, secure_cookies=False, throttle=throttle))
    answers = await asyncio.gather(
        *(client.sign_in("a@example.com", f"wrong password {n}") for n in range(12))
    )
    codes = sorted(r.status_code for r in answers)
    assert codes == [401] * 3 + [429] * 9
    assert (await client.sign_in("a@example.com")).status_code == 429
    await client.aclose()


async def test_successful_sign_ins_do_not_use_up_the_address_budget(
    sqlite_store: Store, events: EventLog
) -> None:
    await sqlite_store.create_account("a@example.com", PASSWORD, Actor.admin_cli())
    throttle = LoginThrottle(per_account=2, per_address=2, window_secs=60)
    client = ApiClient(create_api(sqlite_store, events, secure_cookies=False, throttle=throttle))
    for _ in range(5):  # e.g. a whole office behind one address
        assert (await client.sign_in("a@example.com")).status_code == 200
    assert (await client.sign_in("a@example.com", "wrong password!")).status_code == 401
    assert (await client.sign_in("a@example.com")).status_code == 200
    await client.aclose()


async def test_guessing_the_current_password_is_throttled(
    sqlite_store: Store, events: EventLog
) -> None:
    """A stolen session must not be a way to find out the password itself."""
    await sqlite_store.create_account("a@example.com", PASSWORD, Actor.admin_cli())
    throttle = LoginThrottle(per_account=3, per_address=100, window_secs=60)
    client = ApiClient(create_api(sqlite_store, events, secure_cookies=False, throttle=throttle))
    assert (await client.sign_in("a@example.com")).status_code == 200
    change = {"new_password": "a brand new secret"}
    for n in range(3):
        wrong = await client.call(
            "PUT", "/account/password", json={**change, "current_password": f"guess {n}"}
        )
        assert _error(wrong)[:2] == (403, "permission_denied")
    blocked = await client.call(
        "PUT", "/account/password", json={**change, "current_password": PASSWORD}
    )
    assert _error(blocked)[:2] == (429, "resource_exhausted")
    assert "Retry-After" in blocked.headers
    # Nothing changed: the old password still works, the session is still live.
    assert await sqlite_store.authenticate("a@example.com", PASSWORD) is not None
    assert (await client.call("GET", "/session")).status_code == 200
    await client.aclose()
