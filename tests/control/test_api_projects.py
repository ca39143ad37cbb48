"""Projects, members, keys, bans, logs and bad input through the REST API (in-process)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import httpx

from pulsebeam.auth import public_key_for_secret
from pulsebeam.control.base import utcnow
from pulsebeam.control.events import BanAdded, BanRemoved, KeyDeleted
from pulsebeam.control.records import ConnectionLogEntry, UsageDelta
from pulsebeam.control.store import Store
from pulsebeam.control.views import Actor

from .conftest import ApiClient, EventLog
from .helpers import PASSWORD, backdate_key


def _error(response: httpx.Response) -> tuple[int, str]:
    body = response.json()["error"]
    assert isinstance(body["message"], str)
    assert body["message"]
    return response.status_code, body["code"]


async def _project(client: ApiClient, name: str = "Demo") -> dict[str, Any]:
    response = await client.call("POST", "/projects", json={"name": name})
    assert response.status_code == 201, response.text
    return dict(response.json())


async def _second_user(alice: ApiClient, store: Store, email: str) -> ApiClient:
    await store.create_account(email, PASSWORD, Actor.admin_cli())
    other = ApiClient(alice.app)
    assert (await other.sign_in(email)).status_code == 200
    return other


async def test_project_lifecycle(alice: ApiClient) -> None:
    project = await _project(alice)
    assert project["role"] == "owner"
    assert project["id"].startswith("prj_")
    pid = project["id"]
    assert [p["id"] for p in (await alice.call("GET", "/projects")).json()] == [pid]
    renamed = await alice.call("PATCH", f"/projects/{pid}", json={"name": "Renamed"})
    assert renamed.json()["name"] == "Renamed"
    assert renamed.json()["role"] == "owner"
    assert (await alice.call("GET", f"/projects/{pid}")).json()["name"] == "Renamed"
    assert (await alice.call("DELETE", f"/projects/{pid}")).status_code == 204
    assert _error(await alice.call("GET", f"/projects/{pid}")) == (404, "not_found")


async def test_non_members_get_404_everywhere(alice: ApiClient, sqlite_store: Store) -> None:
    pid = (await _project(alice))["id"]
    kid = (await alice.call("POST", f"/projects/{pid}/keys", json={})).json()["api_key"]
    eve = await _second_user(alice, sqlite_store, "eve@example.com")
    missing = "prj_0000000000000000"
    for method, suffix, body in [
        ("GET", "", None),
        ("PATCH", "", {"name": "x"}),
        ("DELETE", "", None),
        ("GET", "/keys", None),
        ("POST", "/keys", {}),
        ("DELETE", f"/keys/{kid}", None),
        ("GET", "/bans", None),
        ("POST", "/bans", {"peer_pattern": "x"}),
        ("GET", "/members", None),
        ("POST", "/members", {"email": "eve@example.com"}),
        ("GET", "/audit", None),
        ("GET", "/usage", None),
        ("GET", "/connections", None),
    ]:
        hidden = await eve.call(method, f"/projects/{pid}{suffix}", json=body)
        absent = await eve.call(method, f"/projects/{missing}{suffix}", json=body)
        assert _error(hidden) == _error(absent) == (404, "not_found"), (method, suffix)
        assert (
            hidden.json()["error"]["message"].replace(pid, missing)
            == (absent.json()["error"]["message"])
        )
    # Nothing changed for alice.
    assert (await alice.call("GET", f"/projects/{pid}")).json()["name"] == "Demo"
    assert len((await alice.call("GET", f"/projects/{pid}/keys")).json()) == 1
    await eve.aclose()


async def test_keys_secret_once_and_revocation_events(
    alice: ApiClient, sqlite_store: Store, events: EventLog
) -> None:
    pid = (await _project(alice))["id"]
    created = await alice.call("POST", f"/projects/{pid}/keys", json={"label": "web"})
    assert created.status_code == 201
    key = created.json()
    assert public_key_for_secret(key["api_secret"]) == key["public_key"]
    listed = (await alice.call("GET", f"/projects/{pid}/keys")).json()
    assert [k["api_key"] for k in listed] == [key["api_key"]]
    assert "api_secret" not in listed[0]
    assert key["api_secret"] not in str(listed)
    assert listed[0]["needs_rotation"] is False
    assert listed[0]["created_by"] == "alice@example.com"

    await backdate_key(sqlite_store, key["api_key"], utcnow() - timedelta(days=91))
    assert (await alice.call("GET", f"/projects/{pid}/keys")).json()[0]["needs_rotation"] is True

    assert events.events == []
    deleted = await alice.call("DELETE", f"/projects/{pid}/keys/{key['api_key']}")
    assert deleted.status_code == 204
    assert events.events == [KeyDeleted(key["api_key"], pid)]
    again = await alice.call("DELETE", f"/projects/{pid}/keys/{key['api_key']}")
    assert _error(again) == (404, "not_found")
    assert len(events.events) == 1


async def test_deleting_a_project_revokes_its_keys(alice: ApiClient, events: EventLog) -> None:
    pid = (await _project(alice))["id"]
    kids = {
        (await alice.call("POST", f"/projects/{pid}/keys", json={})).json()["api_key"]
        for _ in range(2)
    }
    assert (await alice.call("DELETE", f"/projects/{pid}")).status_code == 204
    assert {e.kid for e in events.events if isinstance(e, KeyDeleted)} == kids


async def test_bans(alice: ApiClient, events: EventLog) -> None:
    pid = (await _project(alice))["id"]
    until = (utcnow() + timedelta(hours=2)).isoformat()
    added = await alice.call(
        "POST",
        f"/projects/{pid}/bans",
        json={
            "group_pattern": "room*",
            "peer_pattern": "mallory",
            "reason": "spam",
            "expires_at": until,
        },
    )
    assert added.status_code == 201
    ban = added.json()
    [added_event] = events.events
    assert added_event == BanAdded(ban["id"], pid, "room*", "mallory", added_event.expires_at)
    assert added_event.ban().expires_at == datetime.fromisoformat(until)  # the expiry travels
    assert [b["id"] for b in (await alice.call("GET", f"/projects/{pid}/bans")).json()] == [
        ban["id"]
    ]

    for body in (
        {"peer_pattern": "a*b*c"},
        {"peer_pattern": "x", "expires_at": (utcnow() - timedelta(hours=1)).isoformat()},
    ):
        assert _error(await alice.call("POST", f"/projects/{pid}/bans", json=body)) == (
            400,
            "invalid_argument",
        )
    edge = {"peer_pattern": "x", "expires_at": "9999-12-31T23:00:00-05:00"}
    assert _error(await alice.call("POST", f"/projects/{pid}/bans", json=edge)) == (
        400,
        "invalid_argument",
    )
    naive = {"peer_pattern": "x", "expires_at": "2099-01-01T00:00:00"}
    assert _error(await alice.call("POST", f"/projects/{pid}/bans", json=naive))[0] == 422
    assert len((await alice.call("GET", f"/projects/{pid}/bans")).json()) == 1
    assert len(events.events) == 1

    removed = await alice.call("DELETE", f"/projects/{pid}/bans/{ban['id']}")
    assert removed.status_code == 204
    assert events.events[-1] == BanRemoved(ban["id"], pid)
    assert (await alice.call("GET", f"/projects/{pid}/bans")).json() == []


async def test_shared_ownership(alice: ApiClient, sqlite_store: Store) -> None:
    pid = (await _project(alice))["id"]
    bob = await _second_user(alice, sqlite_store, "bob@example.com")
    await sqlite_store.create_account("carol@example.com", PASSWORD, Actor.admin_cli())
    added = await alice.call("POST", f"/projects/{pid}/members", json={"email": "bob@example.com"})
    assert added.status_code == 201
    assert added.json()["role"] == "member"
    bob_id = added.json()["account_id"]
    # A member uses the project: keys and bans.
    assert (await bob.call("POST", f"/projects/{pid}/keys", json={})).status_code == 201
    # ...but only owners manage members.
    refused = await bob.call(
        "POST", f"/projects/{pid}/members", json={"email": "carol@example.com"}
    )
    assert _error(refused) == (403, "permission_denied")
    dup = await alice.call("POST", f"/projects/{pid}/members", json={"email": "bob@example.com"})
    assert _error(dup) == (409, "already_exists")
    unknown = await alice.call("POST", f"/projects/{pid}/members", json={"email": "x@example.com"})
    assert _error(unknown) == (404, "not_found")
    members = (await alice.call("GET", f"/projects/{pid}/members")).json()
    assert sorted(m["email"] for m in members) == ["alice@example.com", "bob@example.com"]
    alice_id = next(m["account_id"] for m in members if m["email"] == "alice@example.com")
    assert _error(await alice.call("DELETE", f"/projects/{pid}/members/{alice_id}")) == (
        409,
        "already_exists",
    )
    promoted = await alice.call(
        "PATCH", f"/projects/{pid}/members/{bob_id}", json={"role": "owner"}
    )
    assert promoted.json()["role"] == "owner"
    bad_role = await alice.call("PATCH", f"/projects/{pid}/members/{bob_id}", json={"role": "god"})
    assert _error(bad_role)[0] == 422
    # Anyone may leave.
    assert (await alice.call("DELETE", f"/projects/{pid}/members/{alice_id}")).status_code == 204
    assert _error(await alice.call("GET", f"/projects/{pid}")) == (404, "not_found")
    await bob.aclose()


async def test_audit_usage_and_connections(alice: ApiClient, sqlite_store: Store) -> None:
    pid = (await _project(alice))["id"]
    for n in range(3):
        await alice.call("POST", f"/projects/{pid}/keys", json={"label": f"k{n}"})
    page = (await alice.call("GET", f"/projects/{pid}/audit", params={"limit": 2})).json()
    assert [e["action"] for e in page["items"]] == ["key.create", "key.create"]
    assert page["items"][0]["details"] == {"label": "k2"}
    rest = await alice.call(
        "GET", f"/projects/{pid}/audit", params={"before": page["next_before"], "limit": 10}
    )
    assert [e["action"] for e in rest.json()["items"]] == ["key.create", "project.create"]
    assert rest.json()["next_before"] is None
    projects_only = await alice.call("GET", f"/projects/{pid}/audit", params={"kind": "project"})
    assert [e["action"] for e in projects_only.json()["items"]] == ["project.create"]
    bad_kind = await alice.call("GET", f"/projects/{pid}/audit", params={"kind": "nope"})
    assert _error(bad_kind) == (400, "invalid_argument")

    today = utcnow().date()
    await sqlite_store.record_usage(
        [UsageDelta(pid, today, messages=4, peers=frozenset({("g", "a"), ("g", "b")}))]
    )
    usage = (await alice.call("GET", f"/projects/{pid}/usage")).json()
    assert usage["end"] == today.isoformat()
    assert usage["start"] == (today - timedelta(days=29)).isoformat()
    assert [(u["messages"], u["active_peers"]) for u in usage["items"]] == [(4, 2)]
    backwards = await alice.call(
        "GET", f"/projects/{pid}/usage", params={"start": "2026-02-02", "end": "2026-02-01"}
    )
    assert _error(backwards) == (400, "invalid_argument")
    tiny = await alice.call("GET", f"/projects/{pid}/usage", params={"end": date.min.isoformat()})
    assert tiny.status_code == 200

    at = utcnow()
    await sqlite_store.record_connections(
        [ConnectionLogEntry(pid, at, "g", f"p{n}", n + 17, "g", "q", 99, "join") for n in range(3)]
    )
    log = (await alice.call("GET", f"/projects/{pid}/connections", params={"limit": 2})).json()
    assert [r["src_peer"] for r in log["items"]] == ["p2", "p1"]
    older = await alice.call(
        "GET", f"/projects/{pid}/connections", params={"before": log["next_before"]}
    )
    assert [r["src_peer"] for r in older.json()["items"]] == ["p0"]
    assert _error(await alice.call("GET", f"/projects/{pid}/audit", params={"limit": 0}))[0] == 422


async def test_bad_requests_get_json_errors_and_change_nothing(
    alice: ApiClient, sqlite_store: Store
) -> None:
    malformed = await alice.call(
        "POST", "/projects", content=b'{"name": ', headers={"Content-Type": "application/json"}
    )
    assert _error(malformed) == (422, "invalid_argument")
    extra = await alice.call("POST", "/projects", json={"name": "P", "nmae": "typo"})
    assert _error(extra)[0] == 422
    assert "nmae" in extra.json()["error"]["message"]
    empty = await alice.call("POST", "/projects", json={"name": "   "})
    assert _error(empty) == (400, "invalid_argument")
    control = await alice.call("POST", "/projects", json={"name": "a\x00b"})
    assert _error(control) == (400, "invalid_argument")
    huge = await alice.call("POST", "/projects", content=b"x" * 70_000)
    assert _error(huge) == (413, "payload_too_large")

    async def chunks() -> Any:
        for _ in range(10):
            yield b"x" * 10_000

    streamed = await alice.call(
        "POST", "/projects", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert _error(streamed) == (413, "payload_too_large")
    assert _error(await alice.call("GET", "/nowhere")) == (404, "not_found")
    assert _error(await alice.call("PUT", "/projects")) == (405, "method_not_allowed")
    assert await sqlite_store.list_projects() == []


async def test_openapi_document(client: ApiClient) -> None:
    spec = (await client.http.get("/openapi.json")).json()
    assert spec["info"]["title"] == "PulseBeam control-plane API"
    assert "/projects/{project_id}/keys" in spec["paths"]
    answer = spec["paths"]["/projects"]["post"]["responses"]["422"]
    assert answer["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    assert "HTTPValidationError" not in spec["components"]["schemas"]
