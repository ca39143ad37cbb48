"""The key directory and ban list: the control plane's revocable facts, held in memory.

Token checks run on every call, so they must not touch the database: the directory is warmed
from ``list_keys()`` at start, filled on a miss from ``get_key()`` (unknown ids are remembered for
a few seconds so a flood of forged ``kid`` values costs one query each per window), updated at once
by ``KeyDeleted`` events and reloaded in full periodically in case an event was missed.

A store read takes time, and events keep arriving meanwhile: a reload or a miss fetch must not
undo a change made after its read began (bring back a key just deleted, drop a ban just added).
:class:`_Changes` records which entries changed while reads are in flight, and those entries keep
their in-memory state when the read's snapshot lands.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Hashable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Generic, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from pulsebeam.auth import parse_public_key
from pulsebeam.control.records import BanInfo, KeyInfo
from pulsebeam.errors import InvalidArgumentError
from pulsebeam.signaling.store import KeySource

__all__ = ["BanList", "KeyDirectory"]

logger = logging.getLogger(__name__)

_MAX_MISSES = 100_000

K = TypeVar("K", bound=Hashable)


class _Changes(Generic[K]):
    """Generation counter over in-flight store reads: which entries changed since a read began.

    Changes are recorded only while a read is in flight, and forgotten once no read in flight
    began before them, so memory stays bounded by the changes made during reads.
    """

    def __init__(self) -> None:
        self._generation = 0
        self._changed: dict[K, int] = {}
        self._reads: collections.Counter[int] = collections.Counter()  # start generation -> count

    def mark(self, item: K) -> None:
        if self._reads:  # nothing in flight: nothing to protect
            self._generation += 1
            self._changed[item] = self._generation

    @contextlib.contextmanager
    def reading(self) -> Iterator[Callable[[], set[K]]]:
        """Around one store read; yields a function giving the entries changed since it began
        (call it before leaving the block)."""
        start = self._generation
        self._reads[start] += 1
        try:
            yield lambda: {item for item, gen in self._changed.items() if gen > start}
        finally:
            self._reads[start] -= 1
            if not self._reads[start]:
                del self._reads[start]
            oldest = min(self._reads, default=None)
            self._changed = (
                {}
                if oldest is None
                else {item: gen for item, gen in self._changed.items() if gen > oldest}
            )


class KeyDirectory:
    """kid -> (project id, Ed25519 public key); ``lookup`` is the verifier's sync key lookup."""

    def __init__(
        self,
        source: KeySource,
        *,
        miss_ttl_secs: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        self._miss_ttl = miss_ttl_secs
        self._clock = clock
        self._keys: dict[str, tuple[str, Ed25519PublicKey]] = {}
        self._misses: dict[str, float] = {}
        self._fetches: dict[str, asyncio.Future[bool]] = {}
        self._changes: _Changes[str] = _Changes()

    def __len__(self) -> int:
        return len(self._keys)

    def lookup(self, kid: str) -> Ed25519PublicKey | None:
        entry = self._keys.get(kid)
        return None if entry is None else entry[1]

    def project_of(self, kid: str) -> str | None:
        entry = self._keys.get(kid)
        return None if entry is None else entry[0]

    async def load(self) -> set[str]:
        """Replace the whole directory from the store; returns the kids that disappeared.

        Keys deleted or fetched while the store was being read keep their current state."""
        with self._changes.reading() as changed_since:
            keys = await self._source.list_keys()
            changed = changed_since()
        fresh: dict[str, tuple[str, Ed25519PublicKey]] = {}
        for info in keys:
            entry = self._entry(info)
            if entry is not None and info.kid not in changed:
                # Keep the same key object for unchanged keys: the verifier's cache relies on it.
                old = self._keys.get(info.kid)
                fresh[info.kid] = old if old is not None and old[0] == entry[0] else entry
        for kid in changed:
            current = self._keys.get(kid)
            if current is not None:
                fresh[kid] = current
        gone = set(self._keys) - set(fresh)
        self._keys = fresh
        self._misses.clear()
        return gone

    async def ensure(self, kid: str) -> bool:
        """Fetch ``kid`` if it is not known; True if it is known now (fetched by this call or a
        concurrent one). A key deleted while it was being fetched stays out.

        Concurrent calls for one kid share one store read, run as a task of its own: the caller
        may be a call that the HTTP/1.1 fast path started inline, outside any task
        (:mod:`.http1`), where the database driver's timeouts would not work."""
        if kid in self._keys:
            return False
        missed_at = self._misses.get(kid)
        if missed_at is not None and self._clock() - missed_at < self._miss_ttl:
            return False
        fetch = self._fetches.get(kid)
        if fetch is None:
            fetch = self._fetches[kid] = asyncio.ensure_future(self._fetch(kid))
            fetch.add_done_callback(lambda _: self._fetches.pop(kid, None))
        return await asyncio.shield(fetch)  # a caller that gives up leaves the read to the others

    async def _fetch(self, kid: str) -> bool:
        now = self._clock()
        with self._changes.reading() as changed_since:
            info = await self._source.get_key(kid)
            if kid in changed_since():
                return kid in self._keys
        entry = None if info is None else self._entry(info)
        if entry is None:
            if len(self._misses) >= _MAX_MISSES:
                self._misses.clear()
            self._misses[kid] = now
            return False
        self._misses.pop(kid, None)
        self._keys[kid] = entry
        self._changes.mark(kid)
        return True

    def remove(self, kid: str) -> None:
        self._keys.pop(kid, None)
        self._misses[kid] = self._clock()
        self._changes.mark(kid)

    @staticmethod
    def _entry(info: KeyInfo) -> tuple[str, Ed25519PublicKey] | None:
        try:
            return info.project_id, parse_public_key(info.public_key)
        except InvalidArgumentError:
            logger.error("key %s in the store has an unusable public key; ignored", info.kid)
            return None


class BanList:
    """Active bans per project, from the store and ``BanAdded``/``BanRemoved`` events."""

    def __init__(self, source: KeySource) -> None:
        self._source = source
        self._bans: dict[str, dict[str, BanInfo]] = {}
        self._changes: _Changes[tuple[str, str]] = _Changes()

    async def load(self) -> None:
        """Replace every ban from the store; bans added or lifted by events while the store was
        being read keep their current state."""
        with self._changes.reading() as changed_since:
            listed = await self._source.list_bans()
            changed = changed_since()
        bans: dict[str, dict[str, BanInfo]] = {}
        for ban in listed:
            if (ban.project_id, ban.id) not in changed:
                bans.setdefault(ban.project_id, {})[ban.id] = ban
        for project_id, ban_id in changed:
            current = self._bans.get(project_id, {}).get(ban_id)
            if current is not None:
                bans.setdefault(project_id, {})[ban_id] = current
        self._bans = bans

    def add(self, ban: BanInfo) -> None:
        self._bans.setdefault(ban.project_id, {})[ban.id] = ban
        self._changes.mark((ban.project_id, ban.id))

    def remove(self, project_id: str, ban_id: str) -> None:
        self._changes.mark((project_id, ban_id))
        project = self._bans.get(project_id)
        if project is not None:
            project.pop(ban_id, None)
            if not project:
                del self._bans[project_id]

    def matching(self, project_id: str, group_id: str, peer_id: str) -> BanInfo | None:
        project = self._bans.get(project_id)
        if not project:
            return None
        now = datetime.now(UTC)
        return next(
            (b for b in project.values() if b.active_at(now) and b.matches(group_id, peer_id)),
            None,
        )

    def all(self) -> Iterable[BanInfo]:
        for project in self._bans.values():
            yield from project.values()
