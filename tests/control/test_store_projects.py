"""Projects, shared ownership, keys, bans and the audit log in the store (both backends)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import select

from pulsebeam.auth import public_key_for_secret
from pulsebeam.control.base import utcnow
from pulsebeam.control.schema import audit_events, keys
from pulsebeam.control.store import Store
from pulsebeam.control.views import Actor, Role
from pulsebeam.errors import (
    ConflictError,
    InvalidArgumentError,
    InvalidPatternError,
    NotFoundError,
    PermissionDeniedError,
)

from .helpers import PASSWORD, audit_count, backdate_key, expire_ban, new_account


async def test_shared_project_membership(store: Store) -> None:
    alice, as_alice = await new_account(store, "alice@example.com")
    bob, _ = await new_account(store, "bob@example.com")
    eve, _ = await new_account(store, "eve@example.com")
    project = await store.create_project("  Demo  ", alice.id, as_alice)
    assert project.name == "Demo"
    assert project.role is Role.OWNER

    member = await store.add_member(project.id, "BOB@example.com", "member", as_alice)
    assert (member.email, member.role) == ("bob@example.com", Role.MEMBER)
    assert [p.id for p in await store.list_projects(bob.id)] == [project.id]
    assert (await store.require_access(project.id, bob.id)).role is Role.MEMBER
    with pytest.raises(PermissionDeniedError, match="only an owner"):
        await store.require_access(project.id, bob.id, owner=True)
    # A non-member and a missing project look the same: no existence leak.
    with pytest.raises(NotFoundError) as hidden:
        await store.require_access(project.id, eve.id)
    with pytest.raises(NotFoundError) as missing:
        await store.require_access("prj_0000000000000000", eve.id)
    assert str(hidden.value).replace(project.id, "X") == str(missing.value).replace(
        "prj_0000000000000000", "X"
    )
    assert await store.list_projects(eve.id) == []

    with pytest.raises(ConflictError, match="already a member"):
        await store.add_member(project.id, "bob@example.com", "owner", as_alice)
    with pytest.raises(NotFoundError, match="created first"):
        await store.add_member(project.id, "nobody@example.com", "member", as_alice)
    with pytest.raises(InvalidArgumentError, match="role"):
        await store.add_member(project.id, "eve@example.com", "king", as_alice)
    assert len(await store.list_members(project.id)) == 2


async def test_a_project_keeps_an_owner(store: Store) -> None:
    alice, as_alice = await new_account(store, "alice@example.com")
    bob, _ = await new_account(store, "bob@example.com")
    project = await store.create_project("P", alice.id, as_alice)
    with pytest.raises(ConflictError, match="at least one owner"):
        await store.remove_member(project.id, alice.id, as_alice)
    with pytest.raises(ConflictError, match="at least one owner"):
        await store.set_member_role(project.id, alice.id, "member", as_alice)
    await store.add_member(project.id, "bob@example.com", "member", as_alice)
    await store.set_member_role(project.id, bob.id, "owner", as_alice)
    await store.remove_member(project.id, alice.id, as_alice)
    assert [(m.email, m.role) for m in await store.list_members(project.id)] == [
        ("bob@example.com", Role.OWNER)
    ]
    with pytest.raises(NotFoundError):
        await store.remove_member(project.id, alice.id, as_alice)


async def test_keys_store_only_the_public_half(store: Store) -> None:
    alice, as_alice = await new_account(store, "alice@example.com")
    project = await store.create_project("P", alice.id, as_alice)
    created = await store.create_key(project.id, "web", as_alice)
    assert created.key.kid.startswith("kid_")
    assert public_key_for_secret(created.api_secret) == created.key.public_key
    assert await store.get_key(created.key.kid) == created.key
    assert await store.get_key("kid_0000000000000000") is None
    assert await store.list_keys() == [created.key]
    details = await store.list_project_keys(project.id)
    assert details[0].created_by == "alice@example.com"
    assert not details[0].needs_rotation(utcnow())
    # The secret appears in no column of any table.
    async with store._engine.connect() as conn:
        for table in (keys, audit_events):
            rows = (await conn.execute(select(table))).all()
            assert created.api_secret not in repr(rows)
            assert created.api_secret[3:] not in repr(rows)

    await backdate_key(store, created.key.kid, utcnow() - timedelta(days=91))
    assert (await store.list_project_keys(project.id))[0].needs_rotation(utcnow())

    with pytest.raises(NotFoundError):
        await store.create_key("prj_0000000000000000", "x", as_alice)
    with pytest.raises(InvalidArgumentError, match="too long"):
        await store.create_key(project.id, "x" * 101, as_alice)
    assert len(await store.list_keys()) == 1


async def test_delete_key(store: Store) -> None:
    alice, as_alice = await new_account(store, "alice@example.com")
    project = await store.create_project("P", alice.id, as_alice)
    other = await store.create_project("Q", alice.id, as_alice)
    key = (await store.create_key(project.id, "", as_alice)).key
    with pytest.raises(NotFoundError):  # scoped to another project: refused, key kept
        await store.delete_key(key.kid, as_alice, project_id=other.id)
    assert await store.get_key(key.kid) == key
    assert await store.delete_key(key.kid, as_alice, project_id=project.id) == key
    assert await store.get_key(key.kid) is None
    with pytest.raises(NotFoundError):
        await store.delete_key(key.kid, as_alice)


async def test_bans(store: Store) -> None:
    alice, as_alice = await new_account(store, "alice@example.com")
    project = await store.create_project("P", alice.id, as_alice)
    forever = await store.add_ban(project.id, "*", "bot*", as_alice, reason="spam")
    timed = await store.add_ban(
        project.id, "room1", "mallory", as_alice, expires_at=utcnow() + timedelta(hours=1)
    )
    assert forever.matches("any", "bot7")
    assert not forever.matches("any", "bob")
    assert await store.list_bans(project.id) == [forever, timed]
    await expire_ban(store, timed.id, utcnow() - timedelta(seconds=1))
    assert await store.list_bans() == [forever]

    before = await audit_count(store)
    with pytest.raises(InvalidPatternError):
        await store.add_ban(project.id, "a*b*", "x", as_alice)
    with pytest.raises(InvalidArgumentError, match="in the future"):
        await store.add_ban(project.id, "*", "x", as_alice, expires_at=utcnow())
    with pytest.raises(NotFoundError):
        await store.add_ban("prj_0000000000000000", "*", "x", as_alice)
    assert await audit_count(store) == before
    assert await store.list_bans() == [forever]

    other = await store.create_project("Q", alice.id, as_alice)
    with pytest.raises(NotFoundError):
        await store.remove_ban(forever.id, as_alice, project_id=other.id)
    assert await store.remove_ban(forever.id, as_alice) == forever
    assert await store.list_bans() == []


async def test_delete_project_takes_everything_with_it(store: Store) -> None:
    alice, as_alice = await new_account(store, "alice@example.com")
    project = await store.create_project("P", alice.id, as_alice)
    keep = await store.create_project("Keep", alice.id, as_alice)
    k1 = (await store.create_key(project.id, "a", as_alice)).key
    k2 = (await store.create_key(project.id, "b", as_alice)).key
    kept = (await store.create_key(keep.id, "c", as_alice)).key
    await store.add_ban(project.id, "*", "x", as_alice)
    deleted = await store.delete_project(project.id, as_alice)
    assert sorted(k.kid for k in deleted) == sorted([k1.kid, k2.kid])
    assert await store.list_keys() == [kept]
    assert await store.list_bans() == []
    assert [p.id for p in await store.list_projects(alice.id)] == [keep.id]
    with pytest.raises(NotFoundError):
        await store.delete_project(project.id, as_alice)


async def test_every_change_is_audited(store: Store) -> None:
    alice, as_alice = await new_account(store, "alice@example.com")
    await new_account(store, "bob@example.com")
    project = await store.create_project("P", alice.id, as_alice)
    key = (await store.create_key(project.id, "k", as_alice)).key
    ban = await store.add_ban(project.id, "*", "x", as_alice)
    await store.remove_ban(ban.id, as_alice)
    await store.delete_key(key.kid, Actor.admin_cli())
    member = await store.add_member(project.id, "bob@example.com", "member", as_alice)
    await store.set_member_role(project.id, member.account_id, "owner", as_alice)
    await store.remove_member(project.id, member.account_id, as_alice)
    await store.rename_project(project.id, "P2", as_alice)
    entries = await store.list_audit(project.id, limit=100)
    assert [e.action for e in reversed(entries)] == [
        "project.create",
        "key.create",
        "ban.add",
        "ban.remove",
        "key.delete",
        "member.add",
        "member.role",
        "member.remove",
        "project.rename",
    ]
    assert entries[4].actor == "admin-cli"
    assert entries[4].actor_id is None
    assert entries[0].details == {"from": "P", "to": "P2"}
    assert all(e.actor_id == alice.id for e in entries if e.action != "key.delete")
    # Keyset paging: newest first, no overlap, nothing lost.
    first = await store.list_audit(project.id, limit=4)
    rest = await store.list_audit(project.id, before_id=first[-1].id, limit=100)
    assert [e.id for e in first + rest] == [e.id for e in entries]
    with pytest.raises(InvalidArgumentError, match="limit"):
        await store.list_audit(project.id, limit=0)
    # Filters: one family of actions, part of the actor (any case, wildcards taken literally).
    assert [e.action for e in await store.list_audit(project.id, kind="ban")] == [
        "ban.remove",
        "ban.add",
    ]
    assert [e.action for e in await store.list_audit(project.id, actor="ADMIN")] == ["key.delete"]
    assert await store.list_audit(project.id, actor="%") == []
    with pytest.raises(InvalidArgumentError, match="unknown kind"):
        await store.list_audit(project.id, kind="bans")
    # The admin view includes account events, which belong to no project.
    assert {e.action for e in await store.list_audit(limit=100)} >= {"account.create"}


async def test_concurrent_changes_conflict_cleanly(store: Store) -> None:
    """Races end in one winner and clear conflicts, never a server error or a broken rule."""
    first = await asyncio.gather(
        *(store.create_first_account(f"u{n}@example.com", PASSWORD) for n in range(4)),
        return_exceptions=True,
    )
    winners = [r for r in first if not isinstance(r, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(r, ConflictError) for r in first if r not in winners)
    assert len(await store.list_accounts()) == 1

    owner = winners[0]
    actor = Actor(owner.email, owner.id)
    project = await store.create_project("P", owner.id, actor)
    await new_account(store, "bob@example.com")
    adds = await asyncio.gather(
        *(store.add_member(project.id, "bob@example.com", "owner", actor) for _ in range(4)),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, BaseException) for r in adds) == 1
    assert all(isinstance(r, ConflictError) for r in adds if isinstance(r, BaseException))

    bob = await store.find_account("bob@example.com")
    assert bob is not None
    demotions = await asyncio.gather(
        store.set_member_role(project.id, owner.id, "member", actor),
        store.set_member_role(project.id, bob.id, "member", actor),
        return_exceptions=True,
    )
    assert sum(isinstance(r, ConflictError) for r in demotions) == 1
    roles = [m.role for m in await store.list_members(project.id)]
    assert roles.count(Role.OWNER) == 1


async def test_malformed_ids_and_text_are_refused_cleanly(store: Store) -> None:
    """Ids we never issue are simply unknown, and control characters are invalid input: on
    PostgreSQL a NUL reaching a query would otherwise be a server error."""
    alice, as_alice = await new_account(store, "alice@example.com")
    project = await store.create_project("P", alice.id, as_alice)
    for bad in ("prj_\x00", "prj_0123", "x" * 300):
        with pytest.raises(NotFoundError):
            await store.require_access(bad, alice.id)
        with pytest.raises(NotFoundError):
            await store.create_key(bad, "k", as_alice)
    assert await store.get_key("kid_\x00") is None
    assert await store.get_account("acc_\x00") is None
    for call in (
        store.delete_key("kid_\x00", as_alice),
        store.remove_ban("ban_\x00", as_alice),
        store.delete_api_token(alice.id, "tok_\x00", as_alice),
        store.remove_member(project.id, "acc_\x00", as_alice),
    ):
        with pytest.raises(NotFoundError):
            await call
    with pytest.raises(InvalidArgumentError, match="not an email"):
        await store.create_account("a\x00b@example.com", PASSWORD, as_alice)
    with pytest.raises(InvalidArgumentError, match="not an email"):
        await store.add_member(project.id, "bob\x00@example.com", "member", as_alice)
    assert await store.authenticate("alice\x00@example.com", PASSWORD) is None
    assert await store.find_account("alice@example.com\x00") is None
    with pytest.raises(InvalidArgumentError, match="control characters"):
        await store.list_audit(project.id, actor="\x00")
    with pytest.raises(InvalidArgumentError, match="control characters"):
        await store.add_ban(project.id, "*", "x", as_alice, reason="bad\x00")
