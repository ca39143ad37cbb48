"""The key directory and ban list: the control plane's revocable facts, held in memory.

Token checks run on every call, so they must not touch the database: the directory is warmed
from ``list_keys()`` at start, filled on a miss from ``get_key()`` (unknown ids are remembered for
a few seconds so a flood of forged ``kid`` values costs one query each per window), updated at once
by ``KeyDeleted`` events and reloaded in full periodically in case an event was missed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from pulsebeam.auth import parse_public_key
from pulsebeam.control.records import BanInfo, KeyInfo
from pulsebeam.errors import InvalidArgumentError
from pulsebeam.signaling.store import KeySource

__all__ = ["BanList", "KeyDirectory"]

logger = logging.getLogger(__name__)

_MAX_MISSES = 100_000


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

    def __len__(self) -> int:
        return len(self._keys)

    def lookup(self, kid: str) -> Ed25519PublicKey | None:
        entry = self._keys.get(kid)
        return None if entry is None else entry[1]

    def project_of(self, kid: str) -> str | None:
        entry = self._keys.get(kid)
        return None if entry is None else entry[0]

    async def load(self) -> set[str]:
        """Replace the whole directory from the store; returns the kids that disappeared."""
        keys = await self._source.list_keys()
        fresh: dict[str, tuple[str, Ed25519PublicKey]] = {}
        for info in keys:
            entry = self._entry(info)
            if entry is not None:
                # Keep the same key object for unchanged keys: the verifier's cache relies on it.
                old = self._keys.get(info.kid)
                fresh[info.kid] = old if old is not None and old[0] == entry[0] else entry
        gone = set(self._keys) - set(fresh)
        self._keys = fresh
        self._misses.clear()
        return gone

    async def ensure(self, kid: str) -> bool:
        """Fetch ``kid`` if it is not known; True if it became known by this call."""
        if kid in self._keys:
            return False
        now = self._clock()
        missed_at = self._misses.get(kid)
        if missed_at is not None and now - missed_at < self._miss_ttl:
            return False
        info = await self._source.get_key(kid)
        entry = None if info is None else self._entry(info)
        if entry is None:
            if len(self._misses) >= _MAX_MISSES:
                self._misses.clear()
            self._misses[kid] = now
            return False
        self._misses.pop(kid, None)
        self._keys[kid] = entry
        return True

    def remove(self, kid: str) -> None:
        self._keys.pop(kid, None)
        self._misses[kid] = self._clock()

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

    async def load(self) -> None:
        bans: dict[str, dict[str, BanInfo]] = {}
        for ban in await self._source.list_bans():
            bans.setdefault(ban.project_id, {})[ban.id] = ban
        self._bans = bans

    def add(self, ban: BanInfo) -> None:
        self._bans.setdefault(ban.project_id, {})[ban.id] = ban

    def remove(self, project_id: str, ban_id: str) -> None:
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
