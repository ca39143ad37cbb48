"""Accounts, sessions and API tokens in the store, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from pulsebeam.control.base import utcnow
from pulsebeam.control.schema import accounts, api_tokens, web_sessions
from pulsebeam.control.store import Store
from pulsebeam.control.views import Actor
from pulsebeam.errors import ConflictError, InvalidArgumentError, NotFoundError

from .helpers import PASSWORD, audit_count, new_account


async def test_first_run_setup(store: Store) -> None:
    assert not await store.has_accounts()
    first = await store.create_first_account("Admin@Example.com", PASSWORD)
    assert first.email == "admin@example.com"
    assert await store.has_accounts()
    with pytest.raises(ConflictError, match="already exists"):
        await store.create_first_account("other@example.com", PASSWORD)
    assert [a.email for a in await store.list_accounts()] == ["admin@example.com"]


async def test_password_is_hashed_with_argon2id(store: Store) -> None:
    account, _ = await new_account(store, "a@example.com")
    async with store._engine.connect() as conn:
        stored = str(await conn.scalar(select(accounts.c.password_hash)))
    assert stored.startswith("$argon2id$v=19$m=1024,t=1,p=1$")  # the store's hasher
    assert PASSWORD not in stored
    assert await store.authenticate("A@example.com", PASSWORD) == account
    assert await store.authenticate("a@example.com", PASSWORD + "x") is None
    assert await store.authenticate("nobody@example.com", PASSWORD) is None
    assert await store.authenticate("not an email", PASSWORD) is None


@pytest.mark.parametrize(
    ("email", "password", "message"),
    [
        ("a@example.com", "short", "at least 10 characters"),
        ("a@example.com", "aaaaaaaaaaaaaa", "5 different characters"),
        ("alice@example.com", "my alice password", "must not contain the email"),
        ("a@example.com", "x" * 300, "too long"),
        ("no-at-sign", PASSWORD, "not an email address"),
        ("two@@example.com", PASSWORD, "not an email address"),
    ],
)
async def test_bad_account_input_writes_nothing(
    store: Store, email: str, password: str, message: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        await store.create_account(email, password, Actor.admin_cli())
    assert not await store.has_accounts()
    assert await audit_count(store) == 0


async def test_duplicate_email_is_a_conflict(store: Store) -> None:
    await new_account(store, "dup@example.com")
    events = await audit_count(store)
    with pytest.raises(ConflictError, match="already exists"):
        await store.create_account("DUP@example.com", PASSWORD, Actor.admin_cli())
    assert len(await store.list_accounts()) == 1
    assert await audit_count(store) == events


async def test_sessions_expire_and_are_stored_hashed(store: Store) -> None:
    account, _ = await new_account(store, "s@example.com")
    session = await store.create_session(account)
    assert session.token is not None
    found = await store.get_session(session.token)
    assert found is not None
    assert found.account == account
    assert found.csrf_token == session.csrf_token
    async with store._engine.connect() as conn:
        hashes = list(await conn.scalars(select(web_sessions.c.id_hash)))
    assert session.token not in hashes
    expired = await store.create_session(account, ttl=timedelta(seconds=-1))
    assert expired.token is not None
    assert await store.get_session(expired.token) is None
    await store.delete_session(session.token)
    assert await store.get_session(session.token) is None
    assert await store.get_session("made-up") is None


async def test_api_tokens(store: Store) -> None:
    account, actor = await new_account(store, "t@example.com")
    created = await store.create_api_token(account.id, "ci", None, actor)
    assert created.token.startswith("pbt_")
    assert await store.account_for_api_token(created.token) == account
    async with store._engine.connect() as conn:
        stored = list(await conn.scalars(select(api_tokens.c.token_hash)))
    assert created.token not in stored
    listed = await store.list_api_tokens(account.id)
    assert [t.id for t in listed] == [created.info.id]
    assert listed[0].last_used_at is not None  # touched by the lookup above

    other, other_actor = await new_account(store, "u@example.com")
    with pytest.raises(NotFoundError):  # nobody deletes another account's token
        await store.delete_api_token(other.id, created.info.id, other_actor)
    await store.delete_api_token(account.id, created.info.id, actor)
    assert await store.account_for_api_token(created.token) is None
    assert await store.account_for_api_token("pbt_unknown") is None
    assert await store.account_for_api_token("no prefix") is None


async def test_api_token_expiry_rules(store: Store) -> None:
    account, actor = await new_account(store, "e@example.com")
    with pytest.raises(InvalidArgumentError, match="in the future"):
        await store.create_api_token(account.id, "old", utcnow() - timedelta(seconds=1), actor)
    with pytest.raises(InvalidArgumentError, match="time zone"):
        await store.create_api_token(account.id, "naive", utcnow().replace(tzinfo=None), actor)
    with pytest.raises(InvalidArgumentError, match="must not be empty"):
        await store.create_api_token(account.id, "  ", None, actor)
    assert await store.list_api_tokens(account.id) == []


async def test_change_password_signs_out_everywhere(store: Store) -> None:
    account, actor = await new_account(store, "p@example.com")
    session = await store.create_session(account)
    assert session.token is not None
    with pytest.raises(InvalidArgumentError):
        await store.change_password(account.id, "weak", actor)
    assert await store.get_session(session.token) is not None
    await store.change_password(account.id, "a much better secret", actor)
    assert await store.get_session(session.token) is None
    assert await store.authenticate(account.email, "a much better secret") == account
    assert await store.authenticate(account.email, PASSWORD) is None
