"""The key directory and ban list against events that land while a store read is in flight: the
periodic reload or a cache-miss fetch must not undo a key deletion or a ban added or lifted
meanwhile. The store is the real one; a subclass holds a read after it has read (a slow store)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pulsebeam.config import StoreConfig
from pulsebeam.control.records import BanInfo, KeyInfo
from pulsebeam.control.store import Store
from pulsebeam.control.views import Actor
from pulsebeam.signaling.directory import BanList, KeyDirectory

ACTOR = Actor.admin_cli()


@dataclass
class Hold:
    """Holds one kind of read after its snapshot is taken, until released."""

    reached: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_reached(self) -> None:
        async with asyncio.timeout(5):
            await self.reached.wait()


class SlowStore(Store):
    """The real store; a read named in ``holds`` pauses after reading, as a slow database would."""

    holds: dict[str, Hold]

    async def _pause(self, name: str) -> None:
        hold = self.holds.get(name)
        if hold is not None:
            hold.reached.set()
            async with asyncio.timeout(5):
                await hold.release.wait()

    async def get_key(self, kid: str) -> KeyInfo | None:
        info = await super().get_key(kid)
        await self._pause("get_key")
        return info

    async def list_keys(self) -> list[KeyInfo]:
        keys = await super().list_keys()
        await self._pause("list_keys")
        return keys

    async def list_bans(self, project_id: str | None = None) -> list[BanInfo]:
        bans = await super().list_bans(project_id)
        await self._pause("list_bans")
        return bans


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SlowStore]:
    store = await SlowStore.open(StoreConfig(data_dir=tmp_path))
    store.holds = {}
    try:
        yield store
    finally:
        await store.close()


async def _project(store: Store) -> str:
    account = await store.create_account("races@example.test", "correct horse battery", ACTOR)
    return (await store.create_project("p", account.id, ACTOR)).id


def _hold(store: SlowStore, read: str) -> Hold:
    store.holds[read] = hold = Hold()
    return hold


async def test_a_key_deleted_during_a_reload_stays_deleted(store: SlowStore) -> None:
    project_id = await _project(store)
    kid = (await store.create_key(project_id, "k", ACTOR)).key.kid
    directory = KeyDirectory(store)
    await directory.load()
    hold = _hold(store, "list_keys")
    reload = asyncio.create_task(directory.load())
    await hold.wait_reached()  # the snapshot still holds the key
    await store.delete_key(kid, ACTOR)
    directory.remove(kid)  # what the KeyDeleted event does
    hold.release.set()
    await reload
    assert directory.lookup(kid) is None
    assert directory.project_of(kid) is None
    assert directory._changes._changed == {}  # nothing kept once no read is in flight


async def test_a_key_deleted_during_a_miss_fetch_never_enters(store: SlowStore) -> None:
    project_id = await _project(store)
    directory = KeyDirectory(store)
    await directory.load()
    kid = (await store.create_key(project_id, "k", ACTOR)).key.kid  # unknown to the directory
    hold = _hold(store, "get_key")
    fetch = asyncio.create_task(directory.ensure(kid))
    await hold.wait_reached()  # the fetch has the key
    await store.delete_key(kid, ACTOR)
    directory.remove(kid)
    hold.release.set()
    assert not await fetch
    assert directory.lookup(kid) is None
    del store.holds["get_key"]
    assert not await directory.ensure(kid)  # remembered as unknown, and gone from the store


async def test_a_key_fetched_during_a_reload_is_kept_and_not_reported_gone(
    store: SlowStore,
) -> None:
    project_id = await _project(store)
    old = (await store.create_key(project_id, "old", ACTOR)).key.kid
    directory = KeyDirectory(store)
    await directory.load()
    hold = _hold(store, "list_keys")
    reload = asyncio.create_task(directory.load())
    await hold.wait_reached()
    new = (await store.create_key(project_id, "new", ACTOR)).key.kid  # not in the snapshot
    assert await directory.ensure(new)
    hold.release.set()
    assert await reload == set()  # a gone kid would be revoked: its streams closed
    assert directory.lookup(new) is not None
    assert directory.lookup(old) is not None


async def test_a_ban_added_during_a_reload_is_kept(store: SlowStore) -> None:
    project_id = await _project(store)
    bans = BanList(store)
    await bans.load()
    hold = _hold(store, "list_bans")
    reload = asyncio.create_task(bans.load())
    await hold.wait_reached()  # the snapshot has no ban
    ban = await store.add_ban(project_id, "*", "mallory", ACTOR)
    bans.add(ban)  # what the BanAdded event does
    hold.release.set()
    await reload
    assert bans.matching(project_id, "room", "mallory") == ban


async def test_a_ban_lifted_during_a_reload_stays_lifted(store: SlowStore) -> None:
    project_id = await _project(store)
    ban = await store.add_ban(project_id, "*", "mallory", ACTOR)
    kept = await store.add_ban(project_id, "*", "eve", ACTOR)
    bans = BanList(store)
    await bans.load()
    hold = _hold(store, "list_bans")
    reload = asyncio.create_task(bans.load())
    await hold.wait_reached()  # the snapshot still has the ban
    await store.remove_ban(ban.id, ACTOR)
    bans.remove(project_id, ban.id)  # what the BanRemoved event does
    hold.release.set()
    await reload
    assert bans.matching(project_id, "room", "mallory") is None
    assert bans.matching(project_id, "room", "eve") == kept


class CountingStore(SlowStore):
    get_key_calls = 0

    async def get_key(self, kid: str) -> KeyInfo | None:
        self.get_key_calls += 1
        return await super().get_key(kid)


async def test_concurrent_misses_of_one_key_share_one_read_that_outlives_its_callers(
    tmp_path: Path,
) -> None:
    store = await CountingStore.open(StoreConfig(data_dir=tmp_path))
    store.holds = {}
    try:
        project_id = await _project(store)
        directory = KeyDirectory(store)
        await directory.load()
        kid = (await store.create_key(project_id, "k", ACTOR)).key.kid
        hold = _hold(store, "get_key")
        callers = [asyncio.create_task(directory.ensure(kid)) for _ in range(20)]
        await hold.wait_reached()
        callers[0].cancel()  # one caller gives up (its client went away) ...
        hold.release.set()
        assert await asyncio.gather(*callers[1:]) == [True] * 19
        assert store.get_key_calls == 1  # ... the others still got the one read's answer
        assert directory.project_of(kid) == project_id
    finally:
        await store.close()
